import ONNXGraph

/// `com.microsoft.BiasGelu` (onnxruntime `docs/ContribOperators.md`, `contrib_ops/cpu/bert/bias_gelu.cc`): the exact
/// Gelu of a sum, `Y = Gelu(A + B)` with `Gelu(x) = x/2 · (1 + erf(x/√2))`, B broadcast along A's last axis.
/// onnxruntime's optimizer fuses `Add` + `Gelu` into it.
///
/// Backward: `dS = (Φ(S) + S·φ(S)) · dY` with `S = A + B`; `dA = dS`, `dB = Σ dS` over all but the last axis.
struct BiasGelu: Operator {
    static let opType = "BiasGelu"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    private let gelu = BiasedGelu(approximate: false)

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        _ = try inputs.required(1)
        return try gelu.run(inputs, Self.opType)
    }
}

extension BiasGelu: DifferentiableOperator {
    // dS = Gelu'(A + B) · dY; dA = dS, dB = Σ dS reduced to B's shape
    func gradient(_ context: GradientContext) throws -> [Tensor?] { try gelu.gradient(context) }
}
