#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif

/// The one seam to BLAS: OpenBLAS on Linux, Accelerate on Apple platforms. Row-major single precision.
///
/// OpenBLAS runs single-threaded and large products are split across `Parallel`'s threads here: OpenBLAS's own
/// idle threads spin (`sched_yield`) between calls and steal the cores from the elementwise loops around them
/// (measured: elementwise ops ~25% slower with OpenBLAS threads on 2 cores).
public enum BLAS {
    /// Products smaller than this many multiply-adds run on one thread.
    @usableFromInline static let parallelThreshold = 1 << 21

    /// Set once, before the first product.
    @usableFromInline static let singleThreaded: Void = {
        #if !canImport(Accelerate)
        openblas_set_num_threads(1)
        #endif
    }()

    /// `C = alpha · op(A) · op(B) + beta · C` with `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`, row-major,
    /// leading dimensions in elements. Large products are split across threads by columns or rows of C.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let work = m * n * k
        let threads = Parallel.threadCount
        if work < parallelThreshold || threads == 1 || (m < 2 * threads && n < 2 * threads) {
            return serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
        // Every thread packs (copies into BLAS's blocked layout) the whole of the operand it does not split, so
        // split the larger one: B's columns when it is the bigger matrix (a weight), else A's rows.
        if n * k >= m * k && n >= 2 * threads {
            // Columns `columns` of C need columns `columns` of op(B): B's columns, or B's rows when transposed.
            Parallel.forEachChunk(n, minimumPerThread: 1) { columns in
                serialSgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: columns.count, k: k, alpha: alpha,
                            a: a, lda: lda, b: b + (transposeB ? columns.lowerBound * ldb : columns.lowerBound), ldb: ldb,
                            beta: beta, c: c + columns.lowerBound, ldc: ldc)
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
        _ = singleThreaded
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS may skip the beta scaling when k is 0; do it here so the result is defined.
            for row in 0..<m {
                for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
            }
            return
        }
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            blasInt(m), blasInt(n), blasInt(k), alpha, a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    #if canImport(Accelerate)
    @usableFromInline typealias Index = __LAPACK_int
    #else
    @usableFromInline typealias Index = blasint
    #endif

    @inlinable static func blasInt(_ value: Int) -> Index { Index(value) }
}
