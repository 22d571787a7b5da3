import Foundation
import ONNXGraph

/// `Y = tanh(X)` elementwise (ONNX `Tanh`).
///
/// Backward: `dX = dY * (1 - Y²)`.
struct Tanh: FloatFunctionOperator {
    static let opType = "Tanh"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { Foundation.tanh(x) }
}

extension Tanh: DifferentiableOperator {
    // Reads only its output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(outputs: [0]) }

    // dX = dY · (1 − Y²)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), try context.output(0), Gradient.self) : nil]
    }

    /// `(dY, Y) ↦ dY · (1 − Y²)`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ y: Float) -> Float { dy * (1 - y * y) }
    }
}
