#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif

/// The one seam to BLAS: OpenBLAS on Linux, Accelerate on Apple platforms. Row-major single precision.
public enum BLAS {
    /// `C = alpha · op(A) · op(B) + beta · C` with `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`, row-major,
    /// leading dimensions in elements.
    @inlinable
    public static func sgemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
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
