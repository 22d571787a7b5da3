import ONNXGraph

/// `com.microsoft.FastGelu` (onnxruntime `docs/ContribOperators.md`, `contrib_ops/cpu/bert/fast_gelu.cc`): the tanh
/// approximation of Gelu after an optional bias, `Y = Gelu_tanh(X + bias)` with
/// `Gelu_tanh(x) = ½x(1 + tanh(0.7978845608·(x + 0.044715x³)))` (ONNX Gelu's `approximate = "tanh"`, whose kernel
/// and gradient it runs). onnxruntime's optimizer writes it for GPT-2-style MLPs.
///
/// Backward: `dS = Gelu_tanh'(S) · dY` with `S = X + bias`; `dX = dS`, `dBias = Σ dS` over all but the last axis.
struct FastGelu: Operator {
    static let opType = "FastGelu"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    private let gelu = BiasedGelu(approximate: true)

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] { try gelu.run(inputs, Self.opType) }
}

extension FastGelu: DifferentiableOperator {
    // dS = Gelu_tanh'(X + bias) · dY; dX = dS, dBias = Σ dS reduced to bias's shape
    func gradient(_ context: GradientContext) throws -> [Tensor?] { try gelu.gradient(context) }
}

/// `Gelu(A + B)`, shared by `FastGelu` (tanh approximation, B optional) and `BiasGelu` (exact).
struct BiasedGelu {
    let gelu: Gelu

    init(approximate: Bool) { gelu = Gelu(approximate: approximate) }

    /// `A + B` (or A alone), B broadcast along A's last axis.
    private func sum(_ inputs: [Tensor?], _ opType: String) throws -> Tensor {
        let input = try inputs.required(0)
        guard let bias = inputs.optional(1) else { return input }
        guard bias.rank >= 1, bias.shape.last == input.shape.last, (try? broadcastShape([input.shape, bias.shape])) == input.shape else {
            throw KernelError("\(opType): bias of shape \(bias.shape) does not broadcast along the last axis of \(input.shape)")
        }
        return try combine(input, bias, Sum.self)
    }

    func run(_ inputs: [Tensor?], _ opType: String) throws -> [Tensor] {
        try gelu.run([sum(inputs, opType)])
    }

    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let sum = try self.sum(context.inputs, "Gelu")
        let inner = GradientContext(inputs: [sum], outputs: try (0..<context.outputCount).map { try context.output($0) }, outputGradients: context.outputGradients,
                                    wanted: [true])
        guard let dSum = try gelu.gradient(inner)[0] else { return [nil, nil] }
        let bias = context.inputs.optional(1)
        return [context.wants(0) ? dSum : nil,
                context.wants(1) ? try bias.map { try reduceGradient(dSum, to: $0.shape) } : nil]
    }

}

extension Gelu {
    /// A Gelu without a node, for the fused ops that run it.
    init(approximate: Bool) { self.approximate = approximate }
}
