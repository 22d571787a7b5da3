import ONNXGraph

/// ONNX `MatMulInteger` (opset 10, https://onnx.ai/onnx/operators/onnx__MatMulInteger.html): numpy's matmul of two
/// int8/uint8 tensors less their zero points, accumulated exactly in int32, as onnxruntime's dynamic quantizer writes
/// every MatMul of onnx-community's `model_int8` / `model_uint8` / `model_quantized` files.
///
///     Y[..., m, n] = Σ_k (A[..., m, k] − a_zero_point[m]) · (B[..., k, n] − b_zero_point[n])
///
/// Zero points (optional, default 0, the operand's type): a scalar or `[1]` (per tensor); for A, 1-D `[M]` (per row);
/// for B, 1-D `[N]` (per column, what per-channel quantisation writes). onnxruntime's CPU kernel accepts only a
/// per-tensor zero point for A (`matmul_integer.cc`); the per-row form follows the spec and is checked against numpy.
/// Batch axes broadcast, and 1-D operands are promoted, as in `MatMul`.
///
/// No gradient rule: every input and the output are integers. Training reaches a quantised projection through the
/// `DynamicQuantizeMatMul` it is rewritten into (`GraphOptimizer.fuseDynamicQuantizedMatMuls`).
struct MatMulInteger: Operator {
    static let opType = "MatMulInteger"
    static let sinceVersions = [10]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard a.rank >= 1, b.rank >= 1 else { throw KernelError("A and B must have rank >= 1, got \(a.shape) and \(b.shape)") }
        let rows = a.rank == 1 ? 1 : a.shape[a.rank - 2]
        let columns = b.rank == 1 ? 1 : b.shape[b.rank - 1]
        let aCentered = try centered(a, zeroPoints: inputs.optional(2), "A", perRow: rows)
        let bCentered = try centered(b, zeroPoints: inputs.optional(3), "B", perColumn: columns)
        let (shape, values) = try integerMatrixProduct(aCentered, a.shape, bCentered, b.shape)
        return [quantizedTensor(shape: shape, values: values, dataType: .int32)]
    }
}

// MARK: - Quantised values (the one place int8/uint8 tensor storage is read and written)

/// The values of an int8 or uint8 tensor.
func quantizedValues(_ tensor: Tensor, _ what: String) throws(KernelError) -> [Int32] {
    guard tensor.dataType == .int8 || tensor.dataType == .uint8, case .bytes(let bytes) = tensor.storage else {
        throw KernelError("\(what) must be int8 or uint8, got \(tensor.dataType)\(tensor.shape)")
    }
    return tensor.dataType == .int8 ? bytes.map { Int32(Int8(bitPattern: $0)) } : bytes.map { Int32($0) }
}

/// A tensor of `dataType` (uint8, int8 or int32) holding `values`, which the caller keeps in that type's range.
func quantizedTensor(shape: [Int], values: [Int32], dataType: DataType) -> Tensor {
    Tensor(shape: shape, int64s: values.map { Int64($0) }, dataType: dataType)
}

// MARK: - Shared by MatMulInteger, MatMulIntegerToFloat and DynamicQuantizeMatMul

/// `x − zero_point` as exact floats, the zero point per tensor, per row (`perRow`, of x's last-but-one axis) or per
/// column (`perColumn`, of x's last axis). The zero point must have x's type.
func centered(_ x: Tensor, zeroPoints: Tensor?, _ what: String, perRow rows: Int? = nil, perColumn columns: Int? = nil)
    throws(KernelError) -> [Float] {
    let values = try quantizedValues(x, what)
    guard let zeroPoints else { return values.map(Float.init) }
    guard zeroPoints.dataType == x.dataType else {
        throw KernelError("\(what)'s zero point must have \(what)'s type \(x.dataType), got \(zeroPoints.dataType)")
    }
    let zeros = try quantizedValues(zeroPoints, "\(what)'s zero point")
    if zeros.count == 1 && zeroPoints.rank <= 1 {
        let zero = zeros[0]
        return values.map { Float($0 - zero) }
    }
    let width = x.shape.last ?? 1
    if let rows, zeroPoints.rank == 1, zeros.count == rows, x.rank >= 2 {
        return values.indices.map { Float(values[$0] - zeros[($0 / width) % rows]) }
    }
    if let columns, zeroPoints.rank == 1, zeros.count == columns, x.rank >= 2 {
        return values.indices.map { Float(values[$0] - zeros[$0 % columns]) }
    }
    let expected = rows.map { "a scalar or [\($0)] (one per row of \(what))" } ?? columns.map { "a scalar or [\($0)] (one per column of \(what))" } ?? "a scalar"
    throw KernelError("\(what)'s zero point must be \(expected), got shape \(zeroPoints.shape)")
}

/// numpy's matmul of `a` and `b`, integers held exactly as floats (|value| ≤ 255), accumulated exactly: the GEMM runs
/// over slices of at most `exactDepth` of the inner axis, whose sums (≤ 256 · 255² < 2²⁴) a float holds exactly
/// whatever the order of additions, and the slices are added in Int32. Returns Y's shape and values.
func integerMatrixProduct(_ a: [Float], _ aShape: [Int], _ b: [Float], _ bShape: [Int]) throws(KernelError) -> (shape: [Int], values: [Int32]) {
    let promotedA = aShape.count == 1 ? [1] + aShape : aShape
    let promotedB = bShape.count == 1 ? bShape + [1] : bShape
    let (m, k) = (promotedA[promotedA.count - 2], promotedA[promotedA.count - 1])
    let (bRows, n) = (promotedB[promotedB.count - 2], promotedB[promotedB.count - 1])
    guard bRows == k else { throw KernelError("inner dimensions differ: A \(aShape) × B \(bShape)") }
    let aBatch = Array(promotedA.dropLast(2)), bBatch = Array(promotedB.dropLast(2))
    let batch = try broadcastShape([aBatch, bBatch])
    var shape = batch + [m, n]
    if bShape.count == 1 { shape.removeLast() }
    if aShape.count == 1 { shape.remove(at: shape.count - (bShape.count == 1 ? 1 : 2)) }
    var y = [Int32](repeating: 0, count: batch.reduce(1, *) * m * n)
    guard !y.isEmpty, k > 0 else { return (shape, y) }
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            y.withUnsafeMutableBufferPointer { y in
                if bBatch.reduce(1, *) == 1 && aBatch == batch {
                    // One B for every batch entry: A's batch folds into its rows.
                    exactProduct(a.baseAddress!, b.baseAddress!, rows: batch.reduce(1, *) * m, depth: k, columns: n, into: y.baseAddress!)
                    return
                }
                for (index, aIndex, bIndex) in batchPairs(aBatch, bBatch, batch) {
                    exactProduct(a.baseAddress! + aIndex * m * k, b.baseAddress! + bIndex * k * n, rows: m, depth: k,
                                 columns: n, into: y.baseAddress! + index * m * n)
                }
            }
        }
    }
    return (shape, y)
}

/// Inner-axis slice length below which float sums of products of integers in [−255, 255] are exact.
let exactDepth = 256

/// `y = a · b` for row-major `a` `[rows, depth]` and `b` `[depth, columns]` holding integers of magnitude ≤ 255, exact.
private func exactProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, rows: Int, depth: Int, columns: Int,
                          into y: UnsafeMutablePointer<Int32>) {
    var partial = [Float](repeating: 0, count: rows * columns)
    partial.withUnsafeMutableBufferPointer { partial in
        var start = 0
        while start < depth {
            let length = min(exactDepth, depth - start)
            BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: columns, k: length, alpha: 1,
                       a: a + start, lda: depth, b: b + start * columns, ldb: columns, beta: 0,
                       c: partial.baseAddress!, ldc: columns)
            for index in 0..<(rows * columns) { y[index] &+= Int32(partial[index]) }
            start += length
        }
    }
}
