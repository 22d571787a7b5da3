import Foundation
import ONNXGraph

/// `Y = erf(X)` elementwise (ONNX `Erf`): exporters write exact GELU as `0.5·x·(1 + erf(x/√2))` below opset 20.
///
/// Backward: `dX = dY · 2/√π · e^(−X²)`.
struct Erf: FloatFunctionOperator {
    static let opType = "Erf"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { Foundation.erf(x) }
}

extension Erf: DifferentiableOperator {
    // dX = dY · 2/√π · e^(−X²)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), context.input(0), Gradient.self) : nil]
    }

    /// `(dY, X) ↦ dY · 2/√π · e^(−X²)`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ x: Float) -> Float {
            dy * Float(2 / Double.pi.squareRoot()) * fastExp(-x * x)
        }
    }
}
