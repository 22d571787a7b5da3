import Kernels

/// A matrix packed once into the GEMM micro-kernel's panel layout, the B operand of `BLAS.sgemm(…, b: PackedMatrix, …)`.
///
/// Holds op(B) `[rows, columns]` (`rows` = the product's k). Half-precision sources stay half precision in the
/// panels and are widened exactly inside the kernel. Pack a frozen weight W `[K, N]` as is for `x · W`, and
/// transposed for the input gradient `dY · Wᵀ`.
public final class PackedMatrix: @unchecked Sendable {
    /// The element types a panel can keep.
    public enum Precision: Sendable {
        /// IEEE binary32.
        case float32
        /// IEEE binary16.
        case float16
        /// bfloat16.
        case bfloat16
    }

    @usableFromInline let pointer: OpaquePointer
    /// k of the products this operand takes part in.
    public let rows: Int
    /// n of the products.
    public let columns: Int

    /// Packs op(B) from `source`: B `[rows, columns]` with leading dimension `ld`, or `[columns, rows]` when
    /// `transposed`. `source` holds elements of `precision` (Float, or the raw bits of binary16 / bfloat16).
    /// Returns nil when memory runs out.
    public init?(precision: Precision, transposed: Bool, rows: Int, columns: Int, source: UnsafeRawPointer, ld: Int) {
        let type: kernels_type
        switch precision {
        case .float32: type = KERNELS_TYPE_F32
        case .float16: type = KERNELS_TYPE_F16
        case .bfloat16: type = KERNELS_TYPE_BF16
        }
        guard let packed = kernels_pack_b(type, transposed ? 1 : 0, rows, columns, source, ld) else { return nil }
        pointer = packed
        self.rows = rows
        self.columns = columns
    }

    /// Packs a float32 matrix (see `init(precision:…)`).
    public convenience init?(transposed: Bool, rows: Int, columns: Int, floats: UnsafePointer<Float>, ld: Int) {
        self.init(precision: .float32, transposed: transposed, rows: rows, columns: columns,
                  source: UnsafeRawPointer(floats), ld: ld)
    }

    deinit { kernels_packed_b_free(pointer) }

    /// Bytes the panels take.
    public var byteCount: Int { kernels_packed_b_bytes(pointer) }

    /// Column ranges of a product must start at multiples of this.
    public var columnAlignment: Int { kernels_packed_b_column_alignment(pointer) }
}
