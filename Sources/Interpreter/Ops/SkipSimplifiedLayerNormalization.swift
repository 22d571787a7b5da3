import ONNXGraph

/// `com.microsoft.SkipSimplifiedLayerNormalization` (onnxruntime `docs/ContribOperators.md`, CPU kernel
/// `contrib_ops/cpu/skip_layer_norm.cc`): the residual add and the RMS normalisation of the next block in one node,
/// as onnxruntime-genai's model builder writes them between blocks:
///
///     S         = input + skip (+ bias)                              // [..., D]; skip broadcasts to input
///     InvStdDev = 1 / √(mean(S², -1) + epsilon)                      // [..., 1]
///     output    = S · InvStdDev · gamma
///
/// Outputs: output, mean (zeros: the simplified norm has none, as onnxruntime writes), inv_std_var and
/// input_skip_bias_sum (S, which the next block's residual reads).
///
/// Backward: `dS = RMSNorm'(dOutput, dInvStdDev) + dInputSkipBiasSum` (see `SimplifiedLayerNormalization`), then
/// `dInput = dS`, `dSkip = dS` summed to skip's shape, `dBias = Σ dS`, `dGamma = Σ dOutput · S · InvStdDev`.
struct SkipSimplifiedLayerNormalization: Operator {
    static let opType = "SkipSimplifiedLayerNormalization"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let epsilon: Float

    init(node: Node, version: Int) throws {
        epsilon = try node.float("epsilon", default: 1e-5)
    }

    /// `input + skip (+ bias)`, the normalised rows' input.
    private func sum(_ inputs: [Tensor?]) throws -> Tensor {
        try skipSum(inputs.required(0), inputs.required(1), bias: inputs.optional(3), Self.opType)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let sum = try sum(inputs)
        let rows = try RMSRows(sum, scale: inputs.required(2), axis: -1, opType: Self.opType)
        let (y, inverseDeviations) = rows.normalize(epsilon: epsilon)
        return [
            Tensor(shape: input.shape, floats: roundedToPrecision(y, input.dataType), dataType: input.dataType),
            Tensor(shape: rows.statisticsShape, floats: [Float](repeating: 0, count: rows.rows)),
            Tensor(shape: rows.statisticsShape, floats: inverseDeviations),
            sum,
        ]
    }

}

/// `input + skip (+ bias)`: the residual sum the Skip*Normalization ops normalise and pass on; skip broadcasts to
/// input, bias is `[D]`.
func skipSum(_ input: Tensor, _ skip: Tensor, bias: Tensor?, _ opType: String) throws -> Tensor {
    guard input.rank >= 1, skip.rank >= 1, input.shape.last == skip.shape.last,
          (try? broadcastShape([input.shape, skip.shape])) == input.shape else {
        throw KernelError("\(opType): skip of shape \(skip.shape) does not broadcast to input \(input.shape)")
    }
    var sum = try combine(input, skip, Sum.self)
    if let bias {
        guard bias.shape == [input.shape.last!] else {
            throw KernelError("\(opType): bias must have shape [\(input.shape.last!)], got \(bias.shape)")
        }
        sum = try combine(sum, bias, Sum.self)
    }
    return sum
}


extension SkipSimplifiedLayerNormalization: DifferentiableOperator {
    // dS = r·g − S·r³·(mean(g·S) + dInvStdDev/D) + dInputSkipBiasSum (g = dOutput · gamma);
    // dInput = dS, dSkip = Σ_broadcast dS, dBias = Σ_rows dS, dGamma = Σ_rows dOutput · S · r
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let input = try context.input(0), gamma = try context.input(2)
        let sum = try (context.outputs.count > 3 ? context.outputs[3] : nil) ?? self.sum(context.inputs)
        let rows = try RMSRows(sum, scale: gamma, axis: -1, opType: Self.opType)
        let inverseDeviations = try context.output(2).floats
        let dInverse = context.outputGradients.count > 2 ? context.outputGradients[2]?.floats : nil
        let wantSum = context.wants(0) || context.wants(1) || context.wants(3)
        let (dRows, dGammaRow) = rows.gradient(context.outputGradient(0).floats, inverseDeviations: inverseDeviations,
                                               dInverseDeviations: dInverse, wantInput: wantSum,
                                               wantScale: context.wants(2))
        var dSum: Tensor?
        if let dRows {
            dSum = Tensor(shape: input.shape, floats: dRows, dataType: input.dataType)
            if context.outputGradients.count > 3, let dPassed = context.outputGradients[3] {
                dSum = try addGradients(dSum!, dPassed)
            }
        }
        let skip = try context.input(1)
        return [
            context.wants(0) ? dSum : nil,
            context.wants(1) ? try dSum.map { try reduceGradient($0, to: skip.shape) } : nil,
            try dGammaRow.map { try rows.scaleGradient($0) },
            context.wants(3) ? try dSum.map { try reduceGradient($0, to: context.input(3).shape) } : nil,
        ]
    }
}
