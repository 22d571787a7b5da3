import Foundation
import Kernels
import ONNXGraph

/// `Y = 1 / (1 + e^-X)` elementwise (ONNX `Sigmoid`), evaluated as `e^X / (1 + e^X)` for negative `X` so that
/// large negative inputs give tiny values rather than overflowing `e^-X`; `e^x` is `fastExp`. The forward pass runs
/// in the C kernels (`kernels_sigmoid`, the same formula at the CPU's vector width); `apply` is the formula in Swift.
///
/// Backward: `dX = dY * Y * (1 - Y)`.
struct Sigmoid: FloatFunctionOperator {
    static let opType = "Sigmoid"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float {
        // e = exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) below. Branch-free, so the loop vectorises.
        let e = fastExp(x > 0 ? -x : x)
        let positive = 1 / (1 + e)
        return x < 0 ? e * positive : positive
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloatChunks(try inputs.required(0), Self.opType) { count, x, y in kernels_sigmoid(count, x, y) }]
    }
}

extension Sigmoid: DifferentiableOperator {
    // Reads only its output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(outputs: [0]) }

    // dX = dY · Y · (1 − Y)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), try context.output(0), Gradient.self) : nil]
    }

    /// `(dY, Y) ↦ dY · Y · (1 − Y)`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ y: Float) -> Float { dy * y * (1 - y) }
    }
}
