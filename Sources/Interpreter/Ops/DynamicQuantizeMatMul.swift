import ONNXGraph

/// `com.microsoft.DynamicQuantizeMatMul` (onnxruntime `docs/ContribOperators.md`; CPU kernel
/// `contrib_ops/cpu/quantization/dynamic_quantize_matmul.cc`): a float A quantised to uint8 on the fly, as
/// `DynamicQuantizeLinear` does, multiplied by a quantised weight B, and scaled back to float:
///
///     (A_q, a_scale, a_zp) = DynamicQuantizeLinear(A)                   (one scale for the whole of A)
///     Y[..., n] = float(Σ_k (A_q[..., k] − a_zp) · (B[k, n] − b_zp[n])) · (a_scale · b_scale[n]) (+ bias[n])
///
/// Letters: K input features, N output features. Inputs: 0 A float `[..., K]`; 1 B int8/uint8 `[K, N]`; 2 b_scale
/// float, a scalar or `[N]` (per column); 3 b_zero_point (optional) B's type, b_scale's shape; 4 bias (optional) `[N]`.
///
/// onnxruntime's optimiser writes it for `DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scales)` (the quantizer's
/// form of a MatMul) when the DynamicQuantizeLinear has one reader, and `GraphOptimizer.fuseDynamicQuantizedMatMuls`
/// does the same here for every such projection, whatever its quantiser shares: the integer product is the same
/// exact int32 sum, cast to float and multiplied by the same float product of the scales, so Y equals the four
/// nodes' result bit for bit.
///
/// Backward, the straight-through estimator (Bengio et al. 2013; the rule QLoRA uses through its dequantised
/// weights): the rounding of A is treated as the identity, so the product is differentiated as
/// `A · W` with `W = (B − b_zp) · b_scale` the dequantised `[K, N]` weight,
///
///     dA    = dY · Wᵀ
///     dBias = Σ dY over every axis but the last
///
/// and the path through a_scale (A's range) is left out. B, its scale and zero point are frozen: no gradient is ever
/// computed for them (a LoRA adapter beside the projection trains instead).
struct DynamicQuantizeMatMul: Operator {
    static let opType = "DynamicQuantizeMatMul"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard case .float(let values) = a.storage, a.dataType == .float, a.rank >= 1 else {
            throw KernelError("A must be float32 of rank >= 1, got \(a.dataType)\(a.shape)")
        }
        guard b.rank == 2, a.shape.last == b.shape[0] else {
            throw KernelError("B must be [K, N] with K = A's last dimension, got A \(a.shape) and B \(b.shape)")
        }
        let quantization = DynamicQuantization(values)
        let zeroPoint = Float(quantization.zeroPoint)
        let aCentered = quantization.values(values).map { Float($0) - zeroPoint }
        let bCentered = try centered(b, zeroPoints: inputs.optional(3), "B", perColumn: b.shape[1])
        let (shape, sums) = try integerMatrixProduct(aCentered, a.shape, bCentered, b.shape)
        let scales = try columnScales(quantization.scale, inputs.required(2), "b_scale", columns: b.shape[1])
        return [try scaledProduct(sums, shape: shape, scales: scales, bias: inputs.optional(4))]
    }

    /// `W = (B − b_zp) · b_scale`, `[K, N]`.
    func dequantizedWeight(_ inputs: [Tensor?]) throws(KernelError) -> Tensor {
        let b = try inputs.required(1), scale = try inputs.required(2)
        guard b.rank == 2 else { throw KernelError("B must be [K, N], got \(b.shape)") }
        let columns = b.shape[1]
        let values = try centered(b, zeroPoints: inputs.optional(3), "B", perColumn: columns)
        let scales = try columnScales(1, scale, "b_scale", columns: columns)
        return Tensor(shape: b.shape, floats: values.indices.map { values[$0] * scales[$0 % columns] })
    }
}

extension DynamicQuantizeMatMul: DifferentiableOperator {
    // dA reads only the frozen weight (initializers, kept anyway); dBias reads only dY.
    func savedValues(wanted: [Bool]) -> SavedValues {
        SavedValues(inputs: wanted.first == true ? [1, 2, 3] : [])
    }

    // dA = dY · Wᵀ with W = (B − b_zp)·b_scale (straight-through: A's rounding as the identity); dBias = Σ dY;
    // never dB, dScale, dZeroPoint
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: context.wanted.count)
        let dY = context.outputGradient()
        if context.wants(0) {
            result[0] = try matrixProduct(dY, dequantizedWeight(context.inputs), transposeB: true)
        }
        if context.wants(4) {
            let shape = try context.inputShape(4)
            result[4] = Tensor(shape: shape, floats: try reduceGradient(dY, to: shape).floats, dataType: try context.inputType(4))
        }
        return result
    }
}

/// `a_scale · b_scale[n]` per output column (b_scale a scalar, `[1]` or `[columns]`), each product rounded to float
/// as the quantizer's `Mul(a_scale, b_scale)` node computes it.
func columnScales(_ aScale: Float, _ bScale: Tensor, _ what: String, columns: Int) throws(KernelError) -> [Float] {
    guard case .float(let values) = bScale.storage, bScale.rank <= 1, values.count == 1 || values.count == columns else {
        throw KernelError("\(what) must be a float scalar or [\(columns)] (one per output column), got \(bScale.dataType)\(bScale.shape)")
    }
    return (0..<columns).map { aScale * values[values.count == 1 ? 0 : $0] }
}

/// `float(sums) · scales[n] (+ bias[n])` over the last axis: a quantised product back in float.
func scaledProduct(_ sums: [Int32], shape: [Int], scales: [Float], bias: Tensor?) throws(KernelError) -> Tensor {
    let columns = scales.count
    var y = sums.indices.map { Float(sums[$0]) * scales[$0 % columns] }
    if let bias {
        guard case .float(let b) = bias.storage, b.count == columns, bias.rank == 1 else {
            throw KernelError("bias must be float [\(columns)], got \(bias.dataType)\(bias.shape)")
        }
        for index in y.indices { y[index] += b[index % columns] }
    }
    return Tensor(shape: shape, floats: y)
}
