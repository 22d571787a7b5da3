import ONNXGraph

/// `com.microsoft.MatMulIntegerToFloat` (onnxruntime `docs/ContribOperators.md`; CPU kernel
/// `contrib_ops/cpu/quantization/dynamic_quantize_matmul.cc`): `MatMulInteger → Cast(float) → Mul(a_scale · b_scale)
/// (+ bias)` in one node, as onnxruntime's optimiser (level extended) writes a quantizer's MatMul whose
/// `DynamicQuantizeLinear` also feeds other projections (q, k and v reading one quantised input).
///
///     Y[..., n] = float(Σ_k (A[..., k] − a_zp) · (B[k, n] − b_zp[n])) · (a_scale · b_scale[n]) (+ bias[n])
///
/// Inputs: 0 A int8/uint8 `[..., K]`; 1 B int8/uint8 `[..., K, N]`; 2 a_scale float scalar; 3 b_scale float, a scalar
/// or `[N]`; 4 a_zero_point (optional) scalar, A's type; 5 b_zero_point (optional) B's type, b_scale's shape; 6 bias
/// (optional) `[N]`. Every product and scale is the one `MatMulInteger`, `Cast` and `Mul` compute.
///
/// No gradient rule: A is an integer. `GraphOptimizer.fuseDynamicQuantizedMatMuls` rewrites a
/// `DynamicQuantizeLinear → MatMulIntegerToFloat` pair into a `DynamicQuantizeMatMul`, which has one.
struct MatMulIntegerToFloat: Operator {
    static let opType = "MatMulIntegerToFloat"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard a.rank >= 1, b.rank >= 2 else { throw KernelError("A must have rank >= 1 and B rank >= 2, got \(a.shape) and \(b.shape)") }
        let columns = b.shape[b.rank - 1]
        let aCentered = try centered(a, zeroPoints: inputs.optional(4), "A")
        let bCentered = try centered(b, zeroPoints: inputs.optional(5), "B", perColumn: columns)
        let (shape, sums) = try integerMatrixProduct(aCentered, a.shape, bCentered, b.shape)
        let aScale = try inputs.required(2)
        guard case .float(let aScales) = aScale.storage, aScales.count == 1 else {
            throw KernelError("a_scale must be a float scalar, got \(aScale.dataType)\(aScale.shape)")
        }
        let scales = try columnScales(aScales[0], inputs.required(3), "b_scale", columns: columns)
        return [try scaledProduct(sums, shape: shape, scales: scales, bias: inputs.optional(6))]
    }
}
