import Kernels
import TestSupport
import XCTest

// Every micro-kernel path this machine can run (the best ISA and each forced lower one) against a naive
// double-precision reference. Tolerance per element: |c - reference| <= absolute + relative · magnitude, where
// magnitude = |alpha| · Σ_p |op(A)[i,p] · op(B)[p,j]| + |beta · C0[i,j]| bounds what float rounding can reach.
final class GEMMKernelTests: ISATestCase {
    static let relative = 2e-6, absolute = 1e-6

    func testDispatchNamesAndForcing() {
        XCTAssertEqual(kernels_isa_supported(KERNELS_ISA_PORTABLE), 1)
        XCTAssertEqual(kernels_isa_supported(kernels_best_isa()), 1)
        for isa in [KERNELS_ISA_PORTABLE, KERNELS_ISA_NEON, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512] {
            XCTAssertEqual(kernels_isa_from_name(kernels_isa_name(isa)), Int32(isa.rawValue))
            let chosen = kernels_force_isa(isa)
            XCTAssertEqual(kernels_active_isa(), chosen)
            XCTAssertEqual(kernels_isa_supported(chosen), 1)
            XCTAssertLessThanOrEqual(chosen.rawValue, isa.rawValue, "forcing never raises the ISA")
            if kernels_isa_supported(isa) != 0 { XCTAssertEqual(chosen, isa) }
        }
        XCTAssertEqual(kernels_isa_from_name("sse9"), -1)
        print("kernels: best ISA here is \(String(cString: kernels_isa_name(kernels_best_isa())))")
    }

    func testSmallOddShapesEveryTransposeAndScaling() {
        let sizes = [1, 7, 63, 65]
        let scalings: [(Float, Float)] = [(1, 0), (-0.75, 1.5), (2, 1)]
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 1)
            for m in sizes { for n in sizes { for k in sizes {
                let transposes = (m == 63 || n == 63 || k == 63) ? [(false, false), (true, true)]
                    : [(false, false), (false, true), (true, false), (true, true)]
                for (ta, tb) in transposes {
                    // Every size is odd, so the transposes pick the scaling: each shape sees two of them.
                    let (alpha, beta) = scalings[(m + n + k + (ta ? 1 : 0) + (tb ? 1 : 0)) % 3]
                    check(isa: isa, m: m, n: n, k: k, ta: ta, tb: tb, alpha: alpha, beta: beta, pad: (m + k) % 3,
                          generator: &generator)
                }
            } } }
        }
    }

    func testLargeDimensionsWithLeadingDimensionsWiderThanRows() {
        // Each dimension above 1000 once (the double-precision reference runs unoptimised in debug builds).
        let shapes = [(1031, 65, 63), (63, 1031, 65), (65, 63, 1031), (7, 1000, 1031), (100, 90, 80)]
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 2)
            for (m, n, k) in shapes {
                for (ta, tb) in [(false, true), (true, false), (true, true)] {
                    check(isa: isa, m: m, n: n, k: k, ta: ta, tb: tb, alpha: 1, beta: 0, pad: 5, generator: &generator)
                }
                check(isa: isa, m: m, n: n, k: k, ta: false, tb: false, alpha: 0.5, beta: -1, pad: 3,
                      generator: &generator)
            }
        }
    }

    func testLargeCTakesLongerInnerBlocks() {
        // C above 2 MiB (730 x 730 floats) cuts k = 300 into one block instead of two, and, for 60 x 8800, k = 1100 into two of 550
        // instead of five; beta applies to the first block only. A is rank one, A[i, p] = r[i] · s[p], so that the
        // reference, C[i, j] = alpha · r[i] · (s · B)[j] + beta · C0[i, j], costs O(k·n + m·n) in a debug build; every
        // row, column and inner index still enters with its own random weight.
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 6)
            for (m, n, k, tb) in [(730, 730, 300, false), (730, 730, 300, true), (60, 8800, 1100, false)] {
                let r = (0..<m).map { _ in generator.float() }, s = (0..<k).map { _ in generator.float() }
                let b = (0..<(k * n)).map { _ in generator.float() }  // [k, n], or [n, k] when tb
                var a = [Float](repeating: 0, count: m * k)
                for i in 0..<m { for p in 0..<k { a[i * k + p] = r[i] * s[p] } }
                let c0 = (0..<(m * n)).map { _ in generator.float() }
                let (alpha, beta): (Float, Float) = (0.5, -1)
                var c = c0
                kernels_sgemm(0, tb ? 1 : 0, m, n, k, alpha, a, k, b, tb ? k : n, beta, &c, n)
                var sb = [Double](repeating: 0, count: n), sAbsB = [Double](repeating: 0, count: n)
                for p in 0..<k {
                    for j in 0..<n {
                        let value = Double(b[tb ? j * k + p : p * n + j])
                        sb[j] += Double(s[p]) * value
                        sAbsB[j] += abs(Double(s[p]) * value)
                    }
                }
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        let expected = Double(alpha) * Double(r[i]) * sb[j] + Double(beta) * Double(c0[i * n + j])
                        let scale = abs(Double(alpha * r[i])) * sAbsB[j] + abs(Double(c0[i * n + j]))
                        worst = max(worst, abs(Double(c[i * n + j]) - expected) / (1e-6 + 1e-6 * scale))
                    }
                }
                XCTAssertLessThanOrEqual(worst, 1, "\(isaName(isa)) \(m)x\(n)x\(k) tb \(tb)")
            }
        }
    }

    func testFewRowsReadOpBInPlace() {
        // Up to 4 rows (decoding) take the path that reads op(B) where it lies: every row count, both layouts of B,
        // chunks of C's columns (1024) crossed, dot products longer and shorter than their 32 partial sums; a packed
        // op(B) large enough (2 MiB) that a few rows over it split by columns.
        let shapes = [(1, 1031, 70), (2, 65, 1000), (3, 2100, 70), (1, 2100, 150), (4, 7, 31), (4, 1025, 65), (5, 63, 65),
                      (2, 4100, 130)]
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 5)
            for (m, n, k) in shapes {
                for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                    let (alpha, beta): (Float, Float) = ta == tb ? (1, 0) : (-0.5, 2)
                    check(isa: isa, m: m, n: n, k: k, ta: ta, tb: tb, alpha: alpha, beta: beta, pad: 3, generator: &generator)
                }
                for pool in [reversedSerialLoop, concurrentLoop] {
                    checkParallel(isa: isa, m: m, n: n, k: k, ta: false, tb: m % 2 == 0, pool: pool, generator: &generator)
                }
            }
        }
    }

    func testBetaZeroAndEmptyInnerDimensionOverwriteNaN() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            for (m, n, k) in [(7, 65, 63), (65, 7, 1), (20, 33, 0), (1, 65, 63), (3, 1030, 40)] {
                let a = [Float](repeating: 1, count: max(m * k, 1)), b = [Float](repeating: 2, count: max(k * n, 1))
                var c = [Float](repeating: .nan, count: m * n)
                kernels_sgemm(0, 0, m, n, k, 1, a, max(k, 1), b, n, 0, &c, n)
                XCTAssertTrue(c.allSatisfy { $0 == Float(2 * k) }, "\(isaName(isa)) \(m)x\(n)x\(k): beta = 0 must ignore NaN in C")
            }
            var c = [Float](repeating: 3, count: 6)
            kernels_sgemm(0, 0, 2, 3, 0, 1, [0], 1, [0], 3, 2, &c, 3)
            XCTAssertEqual(c, [Float](repeating: 6, count: 6), "k = 0 scales C by beta")
        }
    }

    func testPackedPanelsInEveryPrecisionWithColumnAndRowRanges() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 3)
            for precision in [KERNELS_TYPE_F32, KERNELS_TYPE_F16, KERNELS_TYPE_BF16] {
                for (m, n, k) in [(1, 7, 65), (65, 63, 7), (130, 1000, 63), (37, 70, 1031)] {
                    for (ta, tb) in [(false, false), (true, true), (false, true)] {
                        checkPacked(isa: isa, precision: precision, m: m, n: n, k: k, ta: ta, tb: tb, generator: &generator)
                    }
                }
            }
        }
    }

    func testPackedWeightServesItsInputGradient() {
        // dY·Wᵀ from a W packed for x·W (kernels_sgemm_packed_transposed_parallel): every precision, W packed as is
        // or transposed (FusedMatMul's transB), ragged panels (n = 70, 1031) and blocks of k; serial, split by rows
        // (300 rows) and by columns (40 rows), on every ISA.
        let shapes = [(65, 63, 70), (300, 100, 70), (40, 1031, 70), (7, 33, 1031)]  // (m, k, n) of the packed op(B)
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 8)
            for precision in [KERNELS_TYPE_F32, KERNELS_TYPE_F16, KERNELS_TYPE_BF16] {
                for (m, k, n) in shapes {
                    for tb in [false, true] {
                        for pool in [reversedSerialLoop, concurrentLoop] {
                            checkPackedTransposed(isa: isa, precision: precision, m: m, k: k, n: n, tb: tb, pool: pool,
                                                  generator: &generator)
                        }
                    }
                }
            }
        }
    }

    func testParallelSplitsByRowsAndByColumnsOnEveryThreadPool() {
        // (m, n, k): rows sharing one packed op(B); few rows, so columns; all above the parallel threshold.
        let shapes = [(300, 100, 70), (7, 2100, 150), (129, 33, 1031)]
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 4)
            for (m, n, k) in shapes {
                for (ta, tb) in [(false, false), (true, true), (false, true)] {
                    for pool in [reversedSerialLoop, concurrentLoop] {
                        checkParallel(isa: isa, m: m, n: n, k: k, ta: ta, tb: tb, pool: pool, generator: &generator)
                    }
                }
            }
        }
    }

    // MARK: - Checks

    /// Runs the pieces one after another in reverse order: any piece relying on another having run first fails.
    let reversedSerialLoop: kernels_parallel_for = { _, count, context, body in
        for index in (0..<count).reversed() { body!(context, index) }
    }

    /// Runs the pieces on the kernels' pool with 3 threads, as the interpreter does.
    let concurrentLoop: kernels_parallel_for = { _, count, context, body in
        kernels_pool_run(3, count, context, body)
    }

    /// `kernels_sgemm_parallel` and `kernels_sgemm_packed_parallel` (3 threads' worth of pieces) on one product.
    private func checkParallel(isa: kernels_isa, m: Int, n: Int, k: Int, ta: Bool, tb: Bool, pool: kernels_parallel_for,
                               generator: inout Generator) {
        let a = Operand(rows: m, columns: k, transposed: ta, pad: 1, generator: &generator)
        let b = Operand(rows: k, columns: n, transposed: tb, pad: 2, generator: &generator)
        let ldc = n + 3, alpha: Float = 0.75, beta: Float = -0.5
        let c0 = (0..<(m * ldc)).map { _ in generator.float() }
        let expected = reference(m: m, n: n, k: k, alpha: alpha, a: a, b: b, beta: beta, c: c0, ldc: ldc)
        var c = c0
        kernels_sgemm_parallel(ta ? 1 : 0, tb ? 1 : 0, m, n, k, alpha, a.storage, a.ld, b.storage, b.ld, beta, &c, ldc,
                               3, pool, nil)
        compare(c, expected, m: m, n: n, ldc: ldc, "\(isaName(isa)) parallel m \(m) n \(n) k \(k) transA \(ta) transB \(tb)")
        guard let packed = kernels_pack_b(KERNELS_TYPE_F32, tb ? 1 : 0, k, n, b.storage, b.ld) else {
            return XCTFail("packing failed")
        }
        defer { kernels_packed_b_free(packed) }
        c = c0
        kernels_sgemm_packed_parallel(ta ? 1 : 0, m, alpha, a.storage, a.ld, packed, beta, &c, ldc, 3, pool, nil)
        compare(c, expected, m: m, n: n, ldc: ldc,
                "\(isaName(isa)) packed parallel m \(m) n \(n) k \(k) transA \(ta) transB \(tb)")
    }

    private func isaName(_ isa: kernels_isa) -> String { String(cString: kernels_isa_name(isa)) }

    /// One product through `kernels_sgemm` with leading dimensions `pad` wider than the rows, against the reference.
    private func check(isa: kernels_isa, m: Int, n: Int, k: Int, ta: Bool, tb: Bool, alpha: Float, beta: Float,
                       pad: Int, generator: inout Generator) {
        let a = Operand(rows: m, columns: k, transposed: ta, pad: pad, generator: &generator)
        let b = Operand(rows: k, columns: n, transposed: tb, pad: pad + 1, generator: &generator)
        let ldc = n + pad
        var c = (0..<(m * ldc)).map { _ in generator.float() }
        let expected = reference(m: m, n: n, k: k, alpha: alpha, a: a, b: b, beta: beta, c: c, ldc: ldc)
        kernels_sgemm(ta ? 1 : 0, tb ? 1 : 0, m, n, k, alpha, a.storage, a.ld, b.storage, b.ld, beta, &c, ldc)
        compare(c, expected, m: m, n: n, ldc: ldc,
                "\(isaName(isa)) sgemm m \(m) n \(n) k \(k) transA \(ta) transB \(tb) alpha \(alpha) beta \(beta)")
    }

    /// A random op(B) `[k, n]` (stored transposed when `tb`) with values exact in `precision`, and the same packed
    /// in that precision; nil when packing fails. Free the packed operand with `kernels_packed_b_free`.
    private func packedOperand(precision: kernels_type, k: Int, n: Int, tb: Bool,
                               generator: inout Generator) -> (Operand, OpaquePointer)? {
        var b = Operand(rows: k, columns: n, transposed: tb, pad: 3, generator: &generator)
        var bits: [UInt16] = []
        if precision != KERNELS_TYPE_F32 {
            // Half-precision values, with their exact float values in `b` for the reference.
            bits = b.storage.indices.map { _ in precision == KERNELS_TYPE_F16 ? generator.half() : generator.bfloat() }
            b.storage = bits.map { precision == KERNELS_TYPE_F16 ? decodeHalf($0) : decodeBFloat($0) }
        }
        let packed: OpaquePointer? = precision == KERNELS_TYPE_F32
            ? kernels_pack_b(precision, tb ? 1 : 0, k, n, b.storage, b.ld)
            : kernels_pack_b(precision, tb ? 1 : 0, k, n, bits, b.ld)
        return packed.map { (b, $0) }
    }

    /// `C = alpha · A · op(B)ᵀ + beta · C` over a packed op(B) `[k, n]`, against the reference product with op(B)ᵀ
    /// read from the same storage.
    private func checkPackedTransposed(isa: kernels_isa, precision: kernels_type, m: Int, k: Int, n: Int, tb: Bool,
                                       pool: kernels_parallel_for, generator: inout Generator) {
        let a = Operand(rows: m, columns: n, transposed: false, pad: 2, generator: &generator)
        guard let (b, packed) = packedOperand(precision: precision, k: k, n: n, tb: tb, generator: &generator) else {
            return XCTFail("packing failed")
        }
        defer { kernels_packed_b_free(packed) }
        // op(B)ᵀ [n, k] is the same storage read the other way round.
        let bTransposed = Operand(rows: n, columns: k, transposed: !tb, ld: b.ld, storage: b.storage)
        let ldc = k + 1, alpha: Float = -0.75, beta: Float = 0.5
        let c0 = (0..<(m * ldc)).map { _ in generator.float() }
        let expected = reference(m: m, n: k, k: n, alpha: alpha, a: a, b: bTransposed, beta: beta, c: c0, ldc: ldc)
        var c = c0
        kernels_sgemm_packed_transposed_parallel(m, alpha, a.storage, a.ld, packed, beta, &c, ldc, 3, pool, nil)
        compare(c, expected, m: m, n: k, ldc: ldc,
                "\(isaName(isa)) packed transposed \(precision) m \(m) k \(k) n \(n) transB \(tb)")
    }

    /// A product with op(B) packed in `precision`, computed in two column ranges and two row ranges.
    private func checkPacked(isa: kernels_isa, precision: kernels_type, m: Int, n: Int, k: Int, ta: Bool, tb: Bool,
                             generator: inout Generator) {
        let a = Operand(rows: m, columns: k, transposed: ta, pad: 2, generator: &generator)
        guard let (b, packed) = packedOperand(precision: precision, k: k, n: n, tb: tb, generator: &generator) else {
            return XCTFail("packing failed")
        }
        defer { kernels_packed_b_free(packed) }
        XCTAssertEqual(kernels_packed_b_k(packed), k)
        XCTAssertEqual(kernels_packed_b_n(packed), n)
        let ldc = n + 1, alpha: Float = 1.25, beta: Float = 0.5
        var c = (0..<(m * ldc)).map { _ in generator.float() }
        let expected = reference(m: m, n: n, k: k, alpha: alpha, a: a, b: b, beta: beta, c: c, ldc: ldc)
        // Columns [0, split) and [split, n) with split on a panel boundary; rows [0, half) and [half, m).
        let alignment = kernels_packed_b_column_alignment(packed)
        let split = min(n, (n / 2 + alignment - 1) / alignment * alignment)
        let half = m / 2
        for (rows, columns) in [(0..<half, 0..<split), (0..<half, split..<n), (half..<m, 0..<n)] {
            a.storage.withUnsafeBufferPointer { aPointer in
                c.withUnsafeMutableBufferPointer { cPointer in
                    let aOffset = ta ? rows.lowerBound : rows.lowerBound * a.ld
                    kernels_sgemm_packed(ta ? 1 : 0, rows.count, columns.lowerBound, columns.upperBound, alpha,
                                         aPointer.baseAddress! + aOffset, a.ld, packed, beta,
                                         cPointer.baseAddress! + rows.lowerBound * ldc, ldc)
                }
            }
        }
        compare(c, expected, m: m, n: n, ldc: ldc,
                "\(isaName(isa)) packed \(precision) m \(m) n \(n) k \(k) transA \(ta) transB \(tb)")
    }

    /// `alpha · op(A) · op(B) + beta · C` in Double, with the magnitude each element's rounding is measured against.
    private func reference(m: Int, n: Int, k: Int, alpha: Float, a: Operand, b: Operand, beta: Float, c: [Float],
                           ldc: Int) -> [(value: Double, magnitude: Double)] {
        var out = [(value: Double, magnitude: Double)](repeating: (0, 0), count: m * n)
        a.storage.withUnsafeBufferPointer { aValues in
            b.storage.withUnsafeBufferPointer { bValues in
                for i in 0..<m {
                    for j in 0..<n {
                        var sum = 0.0, magnitude = 0.0
                        for p in 0..<k {
                            let product = Double(aValues[a.index(i, p)]) * Double(bValues[b.index(p, j)])
                            sum += product
                            magnitude += abs(product)
                        }
                        let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                        out[i * n + j] = (Double(alpha) * sum + old, abs(Double(alpha)) * magnitude + abs(old))
                    }
                }
            }
        }
        return out
    }

    private func compare(_ c: [Float], _ expected: [(value: Double, magnitude: Double)], m: Int, n: Int, ldc: Int,
                         _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        var failures: [String] = []
        var count = 0
        var maxDifference = 0.0
        for i in 0..<m {
            for j in 0..<n {
                let (value, magnitude) = expected[i * n + j]
                let difference = abs(Double(c[i * ldc + j]) - value)
                maxDifference = max(maxDifference, difference.isNaN ? .infinity : difference)
                if !(difference <= Self.absolute + Self.relative * magnitude) {
                    count += 1
                    if failures.count < 5 { failures.append("[\(i), \(j)] \(c[i * ldc + j]) vs \(value)") }
                }
            }
        }
        if count > 0 {
            XCTFail("\(label): \(count) of \(m * n) values differ (max |difference| \(maxDifference)); first: "
                    + failures.joined(separator: ", "), file: file, line: line)
        }
    }
}

/// A row-major matrix as a GEMM operand: op(X) is `[rows, columns]`; X is stored transposed when asked, with a
/// leading dimension `pad` wider than its stored rows.
struct Operand {
    let rows: Int, columns: Int, transposed: Bool, ld: Int
    var storage: [Float]

    init(rows: Int, columns: Int, transposed: Bool, pad: Int, generator: inout Generator) {
        self.rows = rows
        self.columns = columns
        self.transposed = transposed
        let (storedRows, storedColumns) = transposed ? (columns, rows) : (rows, columns)
        ld = storedColumns + pad
        storage = (0..<max(storedRows * ld, 1)).map { _ in generator.float() }
    }

    /// An operand over given storage.
    init(rows: Int, columns: Int, transposed: Bool, ld: Int, storage: [Float]) {
        (self.rows, self.columns, self.transposed, self.ld, self.storage) = (rows, columns, transposed, ld, storage)
    }

    /// Where op(X)[i, p] is stored.
    func index(_ i: Int, _ p: Int) -> Int { transposed ? p * ld + i : i * ld + p }
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct Generator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }

    /// Random binary16 bits: magnitudes from subnormal (exponent field 0) to about 4, either sign.
    mutating func half() -> UInt16 {
        let bits = next()
        let exponent = UInt16(bits % 17)          // 0 (subnormal) ... 16 (2^1)
        return UInt16((bits >> 8) & 1) << 15 | exponent << 10 | UInt16((bits >> 16) & 0x3ff)
    }

    /// Random bfloat16 bits with magnitudes between 2^-20 and 4, either sign.
    mutating func bfloat() -> UInt16 {
        let bits = next()
        let exponent = UInt16(107 + bits % 22)    // 2^-20 ... 2^1
        return UInt16((bits >> 8) & 1) << 15 | exponent << 7 | UInt16((bits >> 16) & 0x7f)
    }
}

/// binary16 bits to their value, written independently of the kernels' own conversion.
func decodeHalf(_ bits: UInt16) -> Float {
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int((bits >> 10) & 0x1f), mantissa = Float(bits & 0x3ff)
    if exponent == 0 { return sign * mantissa * pow(2, -24) }
    return sign * (1 + mantissa / 1024) * pow(2, Float(exponent - 15))
}

/// bfloat16 bits to their value.
func decodeBFloat(_ bits: UInt16) -> Float {
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int((bits >> 7) & 0xff), mantissa = Float(bits & 0x7f)
    return sign * (1 + mantissa / 128) * pow(2, Float(exponent - 127))
}
