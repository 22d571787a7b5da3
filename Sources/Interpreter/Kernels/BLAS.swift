#if canImport(Accelerate)
import Accelerate
#endif
import Kernels

/// The one seam to GEMM: our own kernels (`Kernels`, dispatched on the CPU's features at first use) everywhere
/// except Apple platforms, where Accelerate keeps the products. Row-major single precision.
///
/// Large products are split across `Parallel`'s threads (the kernels' pool), the threads the elementwise loops around
/// them use, so no second pool spins between calls.
public enum BLAS {
    /// Products smaller than this many multiply-adds run on one thread.
    @usableFromInline static let parallelThreshold = 1 << 21

    /// `C = alpha · op(A) · op(B) + beta · C` with `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`, row-major,
    /// leading dimensions in elements. With `k == 0` or `beta == 0` C is overwritten (NaN in C is ignored). Large
    /// products are split across `Parallel`'s threads (see `kernels_sgemm_parallel`).
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        #if canImport(Accelerate)
        let work = m * n * k
        let threads = Parallel.threadCount
        if work < parallelThreshold || threads == 1 || (m < 2 * threads && n < 2 * threads) {
            return serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
        // Every thread packs the whole of the operand it does not split, so split the larger one.
        if n * k >= m * k && n >= 2 * threads {
            Parallel.forEachChunk(n, minimumPerThread: 1) { columns in
                serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: columns.count, k: k, alpha: alpha,
                            a: a, lda: lda, b: b + (transposeB ? columns.lowerBound * ldb : columns.lowerBound), ldb: ldb,
                            beta: beta, c: c + columns.lowerBound, ldc: ldc)
            }
        } else {
            Parallel.forEachChunk(m, minimumPerThread: 1) { rows in
                serialSgemm(transposeA: transposeA, transposeB: transposeB, m: rows.count, n: n, k: k, alpha: alpha,
                            a: a + (transposeA ? rows.lowerBound : rows.lowerBound * lda), lda: lda, b: b, ldb: ldb,
                            beta: beta, c: c + rows.lowerBound * ldc, ldc: ldc)
            }
        }
        #else
        Parallel.withParallelFor { loop, loopContext in
            kernels_sgemm_parallel(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                   Parallel.threadCount, loop, loopContext)
        }
        #endif
    }

    /// `sgemm` on the calling thread only, for use inside loops that are already parallel.
    @inlinable
    public static func serialSgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        #if canImport(Accelerate)
        if k == 0 {
            // BLAS may skip the beta scaling when k is 0; do it here so the result is defined.
            for row in 0..<m {
                for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
            }
            return
        }
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            __LAPACK_int(m), __LAPACK_int(n), __LAPACK_int(k), alpha, a, __LAPACK_int(lda), b, __LAPACK_int(ldb),
            beta, c, __LAPACK_int(ldc))
        #else
        kernels_sgemm(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        #endif
    }

    /// `C = alpha · op(A) · B + beta · C` with B packed once (`PackedMatrix`), split across `Parallel`'s threads.
    public static func sgemm(
        transposeA: Bool, m: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        Parallel.withParallelFor { loop, loopContext in
            kernels_sgemm_packed_parallel(transposeA ? 1 : 0, m, alpha, a, lda, b.pointer, beta, c, ldc,
                                          Parallel.threadCount, loop, loopContext)
        }
    }

    /// `C = alpha · A · op(B)ᵀ + beta · C` with A `[m, b.columns]`, C `[m, b.rows]`: the input gradient `dY · Wᵀ` of a
    /// product whose W was packed for `x · W`, repacked block by block from its panels (`kernels_sgemm_packed_transposed_parallel`).
    public static func sgemm(
        m: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, transposedOf b: PackedMatrix,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        Parallel.withParallelFor { loop, loopContext in
            kernels_sgemm_packed_transposed_parallel(m, alpha, a, lda, b.pointer, beta, c, ldc, Parallel.threadCount,
                                                     loop, loopContext)
        }
    }
}
