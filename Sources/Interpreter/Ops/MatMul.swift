import ONNXGraph

/// `MatMul`: numpy's matmul. 1-D operands are promoted (a leading 1 for A, a trailing 1 for B) and the added
/// dimension removed from the result; batch dimensions broadcast.
///
/// Shapes: A `[..., M, K]`, B `[..., K, N]`, Y `[..., M, N]`. When B is 2-D (a weight), the batch of A is folded
/// into M and the product is one GEMM; otherwise one GEMM per batch entry, reading the operands in place.
struct MatMul: Operator {
    static let opType = "MatMul"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard a.dataType == b.dataType else {
            throw KernelError("operands have different types: \(a.dataType) and \(b.dataType)")
        }
        guard a.rank >= 1, b.rank >= 1 else {
            throw KernelError("operands must have rank >= 1, got \(a.shape) and \(b.shape)")
        }
        let aShape = a.rank == 1 ? [1] + a.shape : a.shape
        let bShape = b.rank == 1 ? b.shape + [1] : b.shape
        let m = aShape[aShape.count - 2], k = aShape[aShape.count - 1]
        let n = bShape[bShape.count - 1]
        guard bShape[bShape.count - 2] == k else {
            throw KernelError("inner dimensions differ: \(a.shape) × \(b.shape)")
        }
        let aBatch = Array(aShape.dropLast(2)), bBatch = Array(bShape.dropLast(2))
        let batch = try broadcastShape([aBatch, bBatch])
        var outputShape = batch + [m, n]
        if b.rank == 1 { outputShape.removeLast() }
        if a.rank == 1 { outputShape.remove(at: outputShape.count - (b.rank == 1 ? 1 : 2)) }

        let product: Tensor.Storage
        switch (a.storage, b.storage) {
        case (.float(let x), .float(let y)):
            product = .float(floatProduct(x, aBatch, y, bBatch, batch: batch, m: m, k: k, n: n))
        case (.int64(let x), .int64(let y)):
            product = .int64(integerProduct(x, aBatch, y, bBatch, batch: batch, m: m, k: k, n: n))
        default:
            throw KernelError("MatMul is not defined for \(a.dataType)")
        }
        return [Tensor(shape: outputShape, dataType: a.dataType, storage: product)]
    }

    private func floatProduct(_ a: [Float], _ aBatch: [Int], _ b: [Float], _ bBatch: [Int],
                              batch: [Int], m: Int, k: Int, n: Int) -> [Float] {
        let batchCount = batch.reduce(1, *)
        let count = batchCount * m * n
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            initialized = count
            guard count > 0 else { return }
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    guard k > 0 else {
                        out.initialize(repeating: 0)
                        return
                    }
                    if bBatch.reduce(1, *) == 1 && aBatch == batch {
                        // B is one matrix for every batch entry: fold A's batch into its rows.
                        BLAS.sgemm(transposeA: false, transposeB: false, m: batchCount * m, n: n, k: k,
                                   alpha: 1, a: a.baseAddress!, lda: k, b: b.baseAddress!, ldb: n,
                                   beta: 0, c: out.baseAddress!, ldc: n)
                        return
                    }
                    forEachBatch(aBatch, bBatch, batch) { index, aIndex, bIndex in
                        BLAS.sgemm(transposeA: false, transposeB: false, m: m, n: n, k: k,
                                   alpha: 1, a: a.baseAddress! + aIndex * m * k, lda: k,
                                   b: b.baseAddress! + bIndex * k * n, ldb: n,
                                   beta: 0, c: out.baseAddress! + index * m * n, ldc: n)
                    }
                }
            }
        }
    }

    private func integerProduct(_ a: [Int64], _ aBatch: [Int], _ b: [Int64], _ bBatch: [Int],
                                batch: [Int], m: Int, k: Int, n: Int) -> [Int64] {
        var out = [Int64](repeating: 0, count: batch.reduce(1, *) * m * n)
        forEachBatch(aBatch, bBatch, batch) { index, aIndex, bIndex in
            for row in 0..<m {
                for inner in 0..<k {
                    let scale = a[aIndex * m * k + row * k + inner]
                    for column in 0..<n {
                        out[index * m * n + row * n + column] &+= scale &* b[bIndex * k * n + inner * n + column]
                    }
                }
            }
        }
        return out
    }

    /// Calls `body(outputBatchIndex, aBatchIndex, bBatchIndex)` for every entry of the broadcast batch.
    private func forEachBatch(_ aBatch: [Int], _ bBatch: [Int], _ batch: [Int], _ body: (Int, Int, Int) -> Void) {
        let plan = BroadcastPlan(output: batch, operands: [aBatch, bBatch])
        plan.forEachRun(in: 0..<plan.count) { position, run, offsets, strides in
            for step in 0..<run {
                body(position + step, offsets[0] + step * strides[0], offsets[1] + step * strides[1])
            }
        }
    }
}
