import ONNXGraph

/// `Gemm`: `Y = alpha · A' · B' + beta · C`, where `A'` is A or Aᵀ (`transA`), `B'` is B or Bᵀ (`transB`), and
/// C (optional since opset 11) broadcasts to `[M, N]`.
struct Gemm: Operator {
    static let opType = "Gemm"
    static let sinceVersions = [13]

    let alpha: Float
    let beta: Float
    let transA: Bool
    let transB: Bool

    init(node: Node, version: Int) throws {
        alpha = try node.float("alpha", default: 1)
        beta = try node.float("beta", default: 1)
        transA = try node.int("transA", default: 0) != 0
        transB = try node.int("transB", default: 0) != 0
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard a.rank == 2, b.rank == 2 else {
            throw KernelError("A and B must be 2-D, got \(a.shape) and \(b.shape)")
        }
        guard case .float(let x) = a.storage, case .float(let y) = b.storage else {
            throw KernelError("Gemm supports floating-point operands, got \(a.dataType) and \(b.dataType)")
        }
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let n = transB ? b.shape[0] : b.shape[1]
        guard (transB ? b.shape[1] : b.shape[0]) == k else {
            throw KernelError("inner dimensions differ: A' is [\(m), \(k)], B\(transB ? "ᵀ" : "") is from \(b.shape)")
        }
        var out: [Float]
        var beta: Float = 0
        if let c = inputs.optional(2), self.beta != 0 {
            guard c.storage.kind == .float else { throw KernelError("C must be floating-point, got \(c.dataType)") }
            out = try expanded(c, to: [m, n]).floats
            beta = self.beta
        } else {
            out = [Float](repeating: 0, count: m * n)
        }
        x.withUnsafeBufferPointer { x in
            y.withUnsafeBufferPointer { y in
                out.withUnsafeMutableBufferPointer { out in
                    guard let c = out.baseAddress else { return }
                    BLAS.sgemm(transposeA: transA, transposeB: transB, m: m, n: n, k: k, alpha: alpha,
                               a: x.baseAddress!, lda: a.shape[1], b: y.baseAddress!, ldb: b.shape[1],
                               beta: beta, c: c, ldc: n)
                }
            }
        }
        return [Tensor(shape: [m, n], floats: out, dataType: a.dataType)]
    }
}

extension Gemm: DifferentiableOperator {
    // dA reads B and dB reads A; dC only C's shape and type.
    func savedValues(wanted: [Bool]) -> SavedValues {
        SavedValues(inputs: Set((wanted.first == true ? [1] : []) + (wanted.count > 1 && wanted[1] ? [0] : [])))
    }

    // dA = alpha · dY · op(B)ᵀ and dB = alpha · op(A)ᵀ · dY (transposed back where op transposes; see
    // `matrixProductGradient`), dC = beta · Σ_broadcast dY.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dY = context.outputGradient()
        let (dA, dB) = try matrixProductGradient(
            context.inputs.optional(0), context.inputs.optional(1), aShape: context.inputShape(0),
            bShape: context.inputShape(1), dY, transposeA: transA, transposeB: transB, alpha: alpha,
            wantA: context.wants(0), wantB: context.wants(1))
        var dC: Tensor?
        if context.wants(2) {
            let (cShape, cType) = (try context.inputShape(2), try context.inputType(2))
            let reduced = try reduceGradient(dY, to: cShape)
            dC = beta == 1 ? reduced : Tensor(shape: cShape, floats: reduced.floats.map { $0 * beta }, dataType: cType)
        }
        return [dA, dB, dC]
    }
}
