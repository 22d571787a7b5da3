import Kernels
import ONNXGraph

/// numpy-style batched matrix product, `Y = alpha · op(A) · op(B)`, where `op` transposes the last two axes when
/// asked, shared by `MatMul`, `FusedMatMul` and (later) their gradients.
///
/// Shapes: `op(A)` `[..., M, K]`, `op(B)` `[..., K, N]`, Y `[..., M, N]`; batch axes broadcast. 1-D operands are
/// promoted as numpy does (a leading 1 for A, a trailing 1 for B) and the added axis removed from Y. Floating-point
/// products are GEMMs reading the operands in place: one GEMM when B is a single matrix (A's batch folds into
/// M), otherwise one per batch entry.
func matrixProduct(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false, alpha: Float = 1) throws(KernelError) -> Tensor {
    guard a.dataType == b.dataType else {
        throw KernelError("operands have different types: \(a.dataType) and \(b.dataType)")
    }
    guard a.rank >= 1, b.rank >= 1 else {
        throw KernelError("operands must have rank >= 1, got \(a.shape) and \(b.shape)")
    }
    guard !(transposeA && a.rank < 2), !(transposeB && b.rank < 2) else {
        throw KernelError("a transposed operand must have rank >= 2, got \(a.shape) and \(b.shape)")
    }
    let aShape = a.rank == 1 ? [1] + a.shape : a.shape
    let bShape = b.rank == 1 ? b.shape + [1] : b.shape
    let (aRows, aColumns) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
    let (bRows, bColumns) = (bShape[bShape.count - 2], bShape[bShape.count - 1])
    let (m, k) = transposeA ? (aColumns, aRows) : (aRows, aColumns)
    let (bInner, n) = transposeB ? (bColumns, bRows) : (bRows, bColumns)
    guard bInner == k else {
        throw KernelError("inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")")
    }
    let aBatch = Array(aShape.dropLast(2)), bBatch = Array(bShape.dropLast(2))
    let batch = try broadcastShape([aBatch, bBatch])
    var outputShape = batch + [m, n]
    if b.rank == 1 { outputShape.removeLast() }
    if a.rank == 1 { outputShape.remove(at: outputShape.count - (b.rank == 1 ? 1 : 2)) }

    let batchCount = batch.reduce(1, *)
    let count = batchCount * m * n
    switch (a.widenedStorage, b.widenedStorage) {
    case (.float(let x), .float(let y)):
        let product = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            initialized = count
            guard count > 0 else { return }
            guard k > 0 else { return out.initialize(repeating: 0) }
            x.withUnsafeBufferPointer { x in
                y.withUnsafeBufferPointer { y in
                    let (xBase, yBase, outBase) = (x.baseAddress!, y.baseAddress!, out.baseAddress!)
                    if bBatch.reduce(1, *) == 1 && aBatch == batch && !transposeA {
                        // B is one matrix for every batch entry: fold A's batch into its rows.
                        BLAS.sgemm(transposeA: false, transposeB: transposeB, m: batchCount * m, n: n, k: k,
                                   alpha: alpha, a: xBase, lda: aColumns, b: yBase, ldb: bColumns,
                                   beta: 0, c: outBase, ldc: n)
                        return
                    }
                    let pairs = batchPairs(aBatch, bBatch, batch)
                    if pairs.count == 1 {
                        // One matrix each (a LoRA factor's gradient `(x·A)ᵀ · dY`): the product itself is split.
                        BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                                   a: xBase + pairs[0].1 * aRows * aColumns, lda: aColumns,
                                   b: yBase + pairs[0].2 * bRows * bColumns, ldb: bColumns, beta: 0, c: outBase, ldc: n)
                        return
                    }
                    // One GEMM per batch entry; the entries (attention's batch × heads) are spread over the threads.
                    let perThread = max(1, BLAS.parallelThreshold / max(m * n * k, 1))
                    Parallel.forEachChunk(pairs.count, minimumPerThread: perThread) { entries in
                        for (index, aIndex, bIndex) in pairs[entries] {
                            BLAS.serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                                             alpha: alpha, a: xBase + aIndex * aRows * aColumns, lda: aColumns,
                                             b: yBase + bIndex * bRows * bColumns, ldb: bColumns,
                                             beta: 0, c: outBase + index * m * n, ldc: n)
                        }
                    }
                }
            }
        }
        return Tensor(shape: outputShape, floats: product, dataType: a.dataType)
    case (.int64(let x), .int64(let y)):
        guard !transposeA, !transposeB, alpha == 1 else {
            throw KernelError("transposed or scaled integer products are not supported")
        }
        var product = [Int64](repeating: 0, count: count)
        for (index, aIndex, bIndex) in batchPairs(aBatch, bBatch, batch) {
            for row in 0..<m {
                for inner in 0..<k {
                    let scale = x[aIndex * m * k + row * k + inner]
                    for column in 0..<n {
                        product[index * m * n + row * n + column] &+= scale &* y[bIndex * k * n + inner * n + column]
                    }
                }
            }
        }
        return Tensor(shape: outputShape, int64s: product, dataType: a.dataType)
    default:
        throw KernelError("matrix products are not defined for \(a.dataType)")
    }
}

/// A frozen weight packed once for `Y = alpha · A · op(W)` (`Session.packWeights`): op(W) `[k, n]` in the GEMM's
/// panel layout, in the weight's stored precision (float16 and bfloat16 panels take 2 bytes a value and are widened
/// exactly inside the kernel).
public struct PackedWeight: @unchecked Sendable {
    /// `Session.packWeights` leaves weights with fewer values than this alone (LoRA's rank-r matrices).
    public static let minimumCount = 32_768

    let matrix: PackedMatrix
    /// The weight's element type, which A must share.
    let dataType: DataType
    let k: Int
    let n: Int
    /// op(W) is Wᵀ: W is `[n, k]`, and its rows are the packed columns (`rows(_:)`).
    let transposed: Bool

    /// `weight` (`[k, n]`, or `[n, k]` when `transposed`) packed; nil unless it is a non-empty float32 / float16 /
    /// bfloat16 matrix.
    init?(_ weight: Tensor, transposed: Bool) throws(KernelError) {
        guard weight.rank == 2, weight.count > 0, case .float(let values) = weight.storage else { return nil }
        let (rows, columns) = (weight.shape[0], weight.shape[1])
        let (k, n) = transposed ? (columns, rows) : (rows, columns)
        let packed: PackedMatrix?
        switch weight.dataType {
        case .float:
            packed = PackedMatrix(transposed: transposed, rows: k, columns: n, floats: values, ld: columns)
        case .float16, .bfloat16:
            // The values came from 2-byte ones, so narrowing them back is exact.
            let bits: [UInt16] = weight.dataType == .float16
                ? values.map { Float16($0).bitPattern } : values.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
            packed = bits.withUnsafeBytes { bits in
                PackedMatrix(precision: weight.dataType == .float16 ? .float16 : .bfloat16, transposed: transposed,
                             rows: k, columns: n, source: bits.baseAddress!, ld: columns)
            }
        default:
            return nil
        }
        guard let packed else { throw KernelError("out of memory packing a [\(rows), \(columns)] weight") }
        (matrix, dataType, self.k, self.n, self.transposed) = (packed, weight.dataType, k, n, transposed)
    }

    /// Rows `positions` of W (`[n, k]`, packed transposed), one after another: an embedding lookup in a weight a
    /// tied LM head's product holds packed.
    func rows(_ positions: [Int]) -> [Float] {
        [Float](unsafeUninitializedCapacity: positions.count * k) { out, initialized in
            initialized = positions.count * k
            for (row, position) in positions.enumerated() {
                kernels_packed_b_column(matrix.pointer, position, out.baseAddress! + row * k)
            }
        }
    }
}

/// `alpha · A · op(W)` with op(W) packed once (see `matrixProduct`; A `[..., M, k]` folds its batch into rows).
func matrixProduct(_ a: Tensor, _ weight: PackedWeight, alpha: Float) throws(KernelError) -> Tensor {
    guard a.dataType == weight.dataType else {
        throw KernelError("operands have different types: \(a.dataType) and \(weight.dataType)")
    }
    guard a.rank >= 1, a.shape.last == weight.k, case .float(let x) = a.storage else {
        throw KernelError("inner dimensions differ: \(a.shape) × [\(weight.k), \(weight.n)]")
    }
    let rows = a.count / max(weight.k, 1), n = weight.n
    let product = [Float](unsafeUninitializedCapacity: rows * n) { out, initialized in
        initialized = rows * n
        guard rows * n > 0 else { return }
        x.withUnsafeBufferPointer { x in
            BLAS.sgemm(transposeA: false, m: rows, alpha: alpha, a: x.baseAddress!, lda: weight.k, b: weight.matrix,
                       beta: 0, c: out.baseAddress!, ldc: n)
        }
    }
    return Tensor(shape: Array(a.shape.dropLast()) + [n], floats: product, dataType: a.dataType)
}

/// The gradient of `Y = alpha · A · op(W)` (the packed product above) with respect to A: `dA = alpha · dY · op(W)ᵀ`,
/// from the same panels the forward product read, shaped as A (`aShape`).
func matrixProductGradient(_ dY: Tensor, _ weight: PackedWeight, alpha: Float, aShape: [Int]) throws(KernelError) -> Tensor {
    guard dY.rank >= 1, dY.shape.last == weight.n, case .float(let d) = dY.widenedStorage else {
        throw KernelError("the output gradient \(dY.shape) does not match a product with [\(weight.k), \(weight.n)]")
    }
    let rows = dY.count / max(weight.n, 1), k = weight.k
    guard rows * k == aShape.reduce(1, *) else {
        throw KernelError("the output gradient \(dY.shape) does not match the input \(aShape)")
    }
    let gradient = [Float](unsafeUninitializedCapacity: rows * k) { out, initialized in
        initialized = rows * k
        guard rows * k > 0 else { return }
        d.withUnsafeBufferPointer { d in
            BLAS.sgemm(m: rows, alpha: alpha, a: d.baseAddress!, lda: weight.n, transposedOf: weight.matrix, beta: 0,
                       c: out.baseAddress!, ldc: k)
        }
    }
    return Tensor(shape: aShape, floats: gradient, dataType: dY.dataType)
}

/// `(outputBatchIndex, aBatchIndex, bBatchIndex)` for every entry of the broadcast batch.
func batchPairs(_ aBatch: [Int], _ bBatch: [Int], _ batch: [Int]) -> [(Int, Int, Int)] {
    var pairs: [(Int, Int, Int)] = []
    let plan = BroadcastPlan(output: batch, operands: [aBatch, bBatch])
    pairs.reserveCapacity(plan.count)
    plan.forEachRun(in: 0..<plan.count) { position, run, offsets, strides in
        for step in 0..<run {
            pairs.append((position + step, offsets[0] + step * strides[0], offsets[1] + step * strides[1]))
        }
    }
    return pairs
}

/// The gradients of `Y = alpha · op(A) · op(B)` (see `matrixProduct`) with respect to A and B, each only when
/// `wantA` / `wantB`, summed over the batch axes the operand was broadcast along.
///
/// With `op` the identity: `dA = alpha · dY · Bᵀ`, `dB = alpha · Aᵀ · dY`. With `op(A) = Aᵀ`: `dA = alpha · B · dYᵀ`
/// (that is `(dY · Bᵀ)ᵀ`), and likewise for B: `dB = alpha · dYᵀ · A` when `op(B) = Bᵀ`. 1-D operands are promoted
/// as in the forward product and the gradient reshaped back.
func matrixProductGradient(
    _ a: Tensor?, _ b: Tensor?, aShape: [Int], bShape: [Int], _ dY: Tensor, transposeA: Bool, transposeB: Bool,
    alpha: Float, wantA: Bool, wantB: Bool
) throws(KernelError) -> (Tensor?, Tensor?) {
    // dA reads only B, dB only A: the tape keeps just the operand the wanted gradients read (`savedValues`).
    func operand(_ tensor: Tensor?, _ name: String) throws(KernelError) -> Tensor {
        guard let tensor else { throw KernelError("the gradient needs \(name), which was not saved") }
        return tensor
    }
    let aRank = aShape.count, bRank = bShape.count
    let a2Shape = aRank == 1 ? [1] + aShape : aShape
    let b2Shape = bRank == 1 ? bShape + [1] : bShape
    // dY with the promoted axes restored: [..., M, N].
    var dShape = dY.shape
    if bRank == 1 { dShape.append(1) }
    if aRank == 1 { dShape.insert(1, at: dShape.count - 1) }
    let d = dY.reshaped(dShape)
    var dA: Tensor?
    var dB: Tensor?
    if wantA {
        let b2 = try operand(b, "B").reshaped(b2Shape)
        // op(A)'s gradient is dY · op(B)ᵀ; for A itself transpose back when op transposed it.
        let g = transposeA
            ? try matrixProduct(b2, d, transposeA: transposeB, transposeB: true, alpha: alpha)
            : try matrixProduct(d, b2, transposeA: false, transposeB: !transposeB, alpha: alpha)
        dA = try reduceGradient(g, to: a2Shape).reshaped(aShape)
    }
    guard wantB else { return (dA, dB) }
    let a2 = try operand(a, "A").reshaped(a2Shape)
    if b2Shape.count == 2 && !transposeA && a2.rank > 2 {
        // A 2-D B shared by every batch entry: fold the batch into rows, one GEMM instead of a per-entry
        // gradient summed afterwards. [..., M, K] → [rows, K] and [..., M, N] → [rows, N].
        let k = a2.shape[a2.rank - 1], n = d.shape[d.rank - 1]
        let rowsA = a2.reshaped([a2.count / max(k, 1), k]), rowsD = d.reshaped([d.count / max(n, 1), n])
        if rowsA.shape[0] == rowsD.shape[0] {
            let g = transposeB
                ? try matrixProduct(rowsD, rowsA, transposeA: true, transposeB: false, alpha: alpha)
                : try matrixProduct(rowsA, rowsD, transposeA: true, transposeB: false, alpha: alpha)
            return (dA, g.reshaped(bShape))
        }
    }
    // op(B)'s gradient is op(A)ᵀ · dY; for B itself transpose back when op transposed it.
    let g = transposeB
        ? try matrixProduct(d, a2, transposeA: true, transposeB: transposeA, alpha: alpha)
        : try matrixProduct(a2, d, transposeA: !transposeA, transposeB: false, alpha: alpha)
    dB = try reduceGradient(g, to: b2Shape).reshaped(bShape)
    return (dA, dB)
}
