import ONNXGraph

/// `com.microsoft.SkipLayerNormalization` (onnxruntime `docs/ContribOperators.md`, `contrib_ops/cpu/skip_layer_norm.cc`):
/// the residual add and a standard layer normalisation in one node, as onnxruntime-genai's builder writes them for
/// Phi-1/2-style models and onnxruntime's optimizer for BERT/GPT-2:
///
///     S      = input + skip (+ bias)                                    // [..., D]; skip broadcasts to input
///     output = LayerNormalization(S, gamma, beta; axis −1, epsilon)
///
/// Outputs: output, mean and inv_std_var (`[..., 1]`), input_skip_bias_sum (S). The normalisation runs through
/// `LayerNormalization` (opset 17), forward and backward.
///
/// Backward: `dS` = LayerNormalization's dX (with dMean and dInvStdDev where read) `+ dInputSkipBiasSum`;
/// `dInput = dS`, `dSkip = dS` summed to skip's shape, `dBias = Σ dS`, `dGamma`, `dBeta` as LayerNormalization's.
struct SkipLayerNormalization: Operator {
    static let opType = "SkipLayerNormalization"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    private let normalization: LayerNormalization

    init(node: Node, version: Int) throws {
        let epsilon = try node.float("epsilon", default: 1e-12)
        normalization = try LayerNormalization(
            node: Node(name: node.name, opType: "LayerNormalization", inputs: [], outputs: [],
                       attributes: ["axis": .int(-1), "epsilon": .float(epsilon)]),
            version: 17)
    }

    /// `input + skip (+ bias)`.
    private func sum(_ inputs: [Tensor?]) throws -> Tensor {
        try skipSum(inputs.required(0), inputs.required(1), bias: inputs.optional(4), Self.opType)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let sum = try sum(inputs)
        return try normalization.run([sum, inputs.required(2), inputs.optional(3)]) + [sum]
    }
}

extension SkipLayerNormalization: DifferentiableOperator {
    // dS = LayerNormalization'(dOutput, dMean, dInvStdDev) + dInputSkipBiasSum; dInput = dS, dSkip = Σ_broadcast dS,
    // dBias = Σ_rows dS; dGamma, dBeta from LayerNormalization
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let sum = try (context.outputs.count > 3 ? context.outputs[3] : nil) ?? self.sum(context.inputs)
        let wantSum = context.wants(0) || context.wants(1) || context.wants(4)
        let inner = GradientContext(
            inputs: [sum, try context.input(2), context.inputs.optional(3)], outputs: try (0..<min(3, context.outputCount)).map { try context.output($0) },
            outputGradients: Array(context.outputGradients.prefix(3)),
            wanted: [wantSum, context.wants(2), context.wants(3)])
        let normalized = try normalization.gradient(inner)
        var dSum = normalized[0]
        if let passed = context.outputGradients.count > 3 ? context.outputGradients[3] : nil {
            dSum = try dSum.map { try addGradients($0, passed) } ?? passed
        }
        return [
            context.wants(0) ? dSum : nil,
            context.wants(1) ? try dSum.map { try reduceGradient($0, to: context.input(1).shape) } : nil,
            normalized[1],
            normalized.count > 2 ? normalized[2] : nil,
            context.wants(4) ? try dSum.map { try reduceGradient($0, to: context.input(4).shape) } : nil,
        ]
    }
}
