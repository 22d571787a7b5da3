import Foundation
import ONNXGraph

/// `Y = sin(X)` elementwise (ONNX `Sin`).
///
/// Backward: `dX = dY * cos(X)`.
struct Sin: FloatFunctionOperator {
    static let opType = "Sin"
    static let sinceVersions = [7]

    static func apply(_ x: Float) -> Float { Foundation.sin(x) }
}

extension Sin: DifferentiableOperator {
    // dX = dY · cos(X)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), context.input(0), Gradient.self) : nil]
    }

    /// `(dY, X) ↦ dY · cos(X)`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ x: Float) -> Float { dy * Foundation.cos(x) }
    }
}
