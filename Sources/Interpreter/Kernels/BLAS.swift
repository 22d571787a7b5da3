#if canImport(Accelerate)
import Accelerate
#endif
import Kernels

/// The one seam to GEMM: our own kernels (`Kernels`, dispatched on the CPU's features at first use) everywhere
/// except Apple platforms, where Accelerate keeps the products. Row-major single precision.
///
/// The kernels run on the calling thread; large products are split across `Parallel`'s threads here, by columns of
/// C on panel boundaries or by rows, so the elementwise loops around them keep the same threads.
public enum BLAS {
    /// Products smaller than this many multiply-adds run on one thread.
    @usableFromInline static let parallelThreshold = 1 << 21

    /// Column splits start on multiples of this, the widest micro-kernel panel (AVX-512: 32 columns), so no thread
    /// computes a partial panel in the middle of C.
    @usableFromInline static let columnAlignment = 32

    /// `C = alpha · op(A) · op(B) + beta · C` with `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`, row-major,
    /// leading dimensions in elements. With `k == 0` or `beta == 0` C is overwritten (NaN in C is ignored). Large
    /// products are split across threads by columns or rows of C.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let work = m * n * k
        let threads = Parallel.threadCount
        let columnBlocks = (n + columnAlignment - 1) / columnAlignment
        if work < parallelThreshold || threads == 1 || (m < 2 * threads && columnBlocks < 2 * threads) {
            return serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
        // Every thread packs (copies into the micro-kernel's panel layout) the whole of the operand it does not
        // split, so split the larger one: B's columns when it is the bigger matrix (a weight), else A's rows.
        if n >= m && columnBlocks >= threads {
            // Columns `columns` of C need columns `columns` of op(B): B's columns, or B's rows when transposed.
            Parallel.forEachChunk(columnBlocks, minimumPerThread: 1) { blocks in
                let start = blocks.lowerBound * columnAlignment, end = min(n, blocks.upperBound * columnAlignment)
                serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: end - start, k: k, alpha: alpha,
                            a: a, lda: lda, b: b + (transposeB ? start * ldb : start), ldb: ldb,
                            beta: beta, c: c + start, ldc: ldc)
            }
        } else {
            // Rows `rows` of C need rows `rows` of op(A): A's rows, or A's columns when transposed.
            Parallel.forEachChunk(m, minimumPerThread: 1) { rows in
                serialSgemm(transposeA: transposeA, transposeB: transposeB, m: rows.count, n: n, k: k, alpha: alpha,
                            a: a + (transposeA ? rows.lowerBound : rows.lowerBound * lda), lda: lda, b: b, ldb: ldb,
                            beta: beta, c: c + rows.lowerBound * ldc, ldc: ldc)
            }
        }
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

    /// `C = alpha · op(A) · B + beta · C` with B packed once (`PackedMatrix`), split across threads like `sgemm`.
    public static func sgemm(
        transposeA: Bool, m: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let n = b.columns, k = b.rows
        let alignment = b.columnAlignment
        let columnBlocks = (n + alignment - 1) / alignment
        let threads = Parallel.threadCount
        func run(rows: Range<Int>, columns: Range<Int>) {
            kernels_sgemm_packed(transposeA ? 1 : 0, rows.count, columns.lowerBound, columns.upperBound, alpha,
                                 a + (transposeA ? rows.lowerBound : rows.lowerBound * lda), lda, b.pointer, beta,
                                 c + rows.lowerBound * ldc, ldc)
        }
        if m * n * k < parallelThreshold || threads == 1 || (m < 2 * threads && columnBlocks < 2 * threads) {
            return run(rows: 0..<m, columns: 0..<n)
        }
        if n >= m && columnBlocks >= threads {
            Parallel.forEachChunk(columnBlocks, minimumPerThread: 1) { blocks in
                run(rows: 0..<m, columns: blocks.lowerBound * alignment..<min(n, blocks.upperBound * alignment))
            }
        } else {
            Parallel.forEachChunk(m, minimumPerThread: 1) { rows in run(rows: rows, columns: 0..<n) }
        }
    }
}
