import Kernels
import TestSupport
import XCTest

// `kernels_nbits_rows` (few-row products reading a block-quantised weight in place) on every ISA this machine runs,
// against a double-precision sum of the dequantised weights `(float(q) − z) · s` computed here from the bytes
// independently of the kernel. Tolerance per element: 1e-6 + 2e-6 · Σ|a · w|, what float sums can reach.
final class NBitsKernelTests: ISATestCase {
    func testEveryRowCountBlockSizeAndRaggedK() {
        // (k, block size, bits): whole blocks of 16, 32, 64 and 128 codes; a ragged last block (k not a multiple of
        // the block, and not of 16 either); 8 bits; one block only.
        let shapes = [(576, 32, 4), (256, 128, 4), (192, 64, 4), (80, 16, 4), (70, 32, 4), (1031, 128, 4), (100, 32, 8),
                      (48, 16, 8), (32, 32, 4), (17, 16, 4)]
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 11)
            for (k, blockSize, bits) in shapes {
                for m in [1, 2, 3, 4, 5, 9] {
                    for zeroPoints in [false, true] {
                        check(isa: isa, m: m, n: 37, k: k, blockSize: blockSize, bits: bits, zeroPoints: zeroPoints,
                              generator: &generator)
                    }
                }
            }
        }
    }

    func testColumnRangesWriteOnlyTheirColumns() {
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var generator = Generator(seed: 12)
            let weight = Weight(n: 50, k: 96, blockSize: 32, bits: 4, zeroPoints: true, generator: &generator)
            let (m, lda, ldc) = (3, 101, 53)
            let a = (0..<(m * lda)).map { _ in generator.float() }
            var c = [Float](repeating: .nan, count: m * ldc)
            for (n0, n1) in [(0, 7), (7, 31), (31, 50)] {
                weight.run(m: m, n0: n0, n1: n1, a: a, lda: lda, c: &c, ldc: ldc)
            }
            let expected = weight.reference(m: m, a: a, lda: lda)
            for row in 0..<m {
                for column in 0..<ldc {
                    let value = c[row * ldc + column]
                    if column >= 50 {
                        XCTAssertTrue(value.isNaN, "\(name(isa)): column \(column) of row \(row) is past n and was written")
                    } else {
                        XCTAssertEqual(Double(value), expected.sums[row * 50 + column],
                                       accuracy: 1e-6 + 2e-6 * expected.magnitudes[row * 50 + column],
                                       "\(name(isa)) row \(row) column \(column)")
                    }
                }
            }
        }
    }

    private func name(_ isa: kernels_isa) -> String { String(cString: kernels_isa_name(isa)) }

    private func check(isa: kernels_isa, m: Int, n: Int, k: Int, blockSize: Int, bits: Int, zeroPoints: Bool,
                       generator: inout Generator) {
        let weight = Weight(n: n, k: k, blockSize: blockSize, bits: bits, zeroPoints: zeroPoints, generator: &generator)
        let lda = k + 3, ldc = n + 2
        let a = (0..<(m * lda)).map { _ in generator.float() }
        var c = [Float](repeating: .nan, count: m * ldc)
        weight.run(m: m, n0: 0, n1: n, a: a, lda: lda, c: &c, ldc: ldc)
        let expected = weight.reference(m: m, a: a, lda: lda)
        var differing = 0, first = ""
        for row in 0..<m {
            for column in 0..<n {
                let value = Double(c[row * ldc + column]), want = expected.sums[row * n + column]
                if !(abs(value - want) <= 1e-6 + 2e-6 * expected.magnitudes[row * n + column]) {
                    if differing == 0 { first = "[\(row), \(column)] \(value) vs \(want)" }
                    differing += 1
                }
            }
        }
        XCTAssertEqual(differing, 0, "\(name(isa)) m \(m) n \(n) k \(k) block \(blockSize) bits \(bits) zero points "
                       + "\(zeroPoints): \(differing) of \(m * n) differ; first \(first)")
    }
}

/// A random block-quantised weight `[n, k]` in MatMulNBits' layout.
private struct Weight {
    let n, k, blockSize, bits: Int
    var bytes: [UInt8]
    var scales: [Float]
    var zeroPoints: [Float]  // empty: the default 2^(bits-1)

    var blocks: Int { (k + blockSize - 1) / blockSize }
    var blobBytes: Int { blockSize * bits / 8 }

    init(n: Int, k: Int, blockSize: Int, bits: Int, zeroPoints withZeroPoints: Bool, generator: inout Generator) {
        (self.n, self.k, self.blockSize, self.bits) = (n, k, blockSize, bits)
        let blocks = (k + blockSize - 1) / blockSize
        bytes = (0..<(n * blocks * blockSize * bits / 8)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        scales = (0..<(n * blocks)).map { _ in generator.float() * 0.1 }
        zeroPoints = withZeroPoints ? (0..<(n * blocks)).map { _ in Float(generator.next() % (1 << UInt64(bits))) } : []
    }

    /// Code `p` of row `row`, read from the bytes as the layout says: block by block, low bits first.
    func code(_ row: Int, _ p: Int) -> Int {
        let start = row * blocks * blobBytes + (p / blockSize) * blobBytes, i = p % blockSize
        if bits == 8 { return Int(bytes[start + i]) }
        let byte = Int(bytes[start + i / 2])
        return i % 2 == 0 ? byte & 0x0F : byte >> 4
    }

    func weight(_ row: Int, _ p: Int) -> Float {
        let index = row * blocks + p / blockSize
        let z = zeroPoints.isEmpty ? Float(1 << (bits - 1)) : zeroPoints[index]
        return (Float(code(row, p)) - z) * scales[index]
    }

    func run(m: Int, n0: Int, n1: Int, a: [Float], lda: Int, c: inout [Float], ldc: Int) {
        zeroPoints.withUnsafeBufferPointer { zeros in
            kernels_nbits_rows(m, n0, n1, k, blockSize, Int32(bits), a, lda, bytes, scales,
                               zeros.isEmpty ? nil : zeros.baseAddress, Float(1 << (bits - 1)), &c, ldc)
        }
    }

    func reference(m: Int, a: [Float], lda: Int) -> (sums: [Double], magnitudes: [Double]) {
        var sums = [Double](repeating: 0, count: m * n), magnitudes = sums
        for row in 0..<m {
            for column in 0..<n {
                for p in 0..<k {
                    let term = Double(a[row * lda + p]) * Double(weight(column, p))
                    sums[row * n + column] += term
                    magnitudes[row * n + column] += abs(term)
                }
            }
        }
        return (sums, magnitudes)
    }
}
