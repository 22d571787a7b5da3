import ONNXGraph

/// `com.microsoft.QuickGelu` (onnxruntime's contrib op): `Y = X · sigmoid(alpha · X)`, `alpha` 1.702 by default.
/// With `alpha = 1` it is SiLU (swish), which `GraphOptimizer` writes in place of `Mul(X, Sigmoid(X))`: one pass
/// over the values instead of two, and no intermediate tensor.
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
        let input = try inputs.required(0)
        guard case .float(let x) = input.storage else {
            throw KernelError("QuickGelu needs a floating-point input, got \(input.dataType)")
        }
        let values = alpha == 1 ? mapKernel(x, Swish.self) : x.map { $0 * Sigmoid.apply(alpha * $0) }
        return [Tensor(shape: input.shape, floats: roundedToPrecision(values, input.dataType), dataType: input.dataType)]
    }

    /// `x · sigmoid(x)`, as a kernel type so that the loop vectorises.
    private enum Swish: UnaryKernel {
        static func apply(_ x: Float) -> Float { x * Sigmoid.apply(x) }
    }
}

extension QuickGelu: DifferentiableOperator {
    // s = sigmoid(alpha · X): dX = dY · (s + alpha · X · s · (1 − s))
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil] }
        return [try combine(context.outputGradient(), context.input(0), parameter: alpha, Gradient.self)]
    }

    /// `(dY, X, alpha) ↦ dY · (s + z · s · (1 − s))` with `z = alpha · X`, `s = sigmoid(z)`.
    private enum Gradient: ParameterizedGradientKernel {
        static func apply(_ dy: Float, _ x: Float, _ alpha: Float) -> Float {
            let z = alpha * x
            let s = Sigmoid.apply(z)
            return dy * (s + z * s * (1 - s))
        }
    }
}
