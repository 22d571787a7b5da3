import Kernels
import ONNXGraph

/// `com.microsoft.QuickGelu` (onnxruntime's contrib op): `Y = X · sigmoid(alpha · X)`, `alpha` 1.702 by default.
/// With `alpha = 1` it is SiLU (swish), which `GraphOptimizer` writes in place of `Mul(X, Sigmoid(X))`: one pass
/// over the values instead of two, and no intermediate tensor. Both directions run in the C kernels
/// (`kernels_quick_gelu`, `kernels_quick_gelu_backward`) at the CPU's vector width, with `Sigmoid`'s formula.
///
/// Backward: with `s = sigmoid(alpha · X)`, `dX = dY · (s + alpha · X · s · (1 − s))`.
struct QuickGelu: Operator {
    static let opType = "QuickGelu"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let alpha: Float

    init(node: Node, version: Int) throws {
        alpha = try node.float("alpha", default: 1.702)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let alpha = self.alpha
        return [try mapFloatChunks(try inputs.required(0), Self.opType) { count, x, y in
            kernels_quick_gelu(count, alpha, x, y)
        }]
    }
}

extension QuickGelu: DifferentiableOperator {
    // s = sigmoid(alpha · X): dX = dY · (s + alpha · X · s · (1 − s))
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil] }
        let alpha = self.alpha
        return [try combineFloatChunks(context.outputGradient(), context.input(0)) { count, dy, x, dx in
            kernels_quick_gelu_backward(count, alpha, dy, x, dx)
        }]
    }
}
