import Foundation
import ONNXGraph

/// `Y = cos(X)` elementwise (ONNX `Cos`).
///
/// Backward: `dX = -dY * sin(X)`.
struct Cos: FloatFunctionOperator {
    static let opType = "Cos"
    static let sinceVersions = [7]

    static func apply(_ x: Float) -> Float { Foundation.cos(x) }
}

extension Cos: DifferentiableOperator {
    // dX = −dY · sin(X)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), context.input(0), Gradient.self) : nil]
    }

    /// `(dY, X) ↦ −dY · sin(X)`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ x: Float) -> Float { -dy * Foundation.sin(x) }
    }
}
