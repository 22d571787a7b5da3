import Foundation
@testable import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Kernels whose fast paths the small op reference cases do not reach: GEMMs large enough to be split across
/// threads, and the vectorisable `exp`.
final class KernelTests: XCTestCase {
    /// `op(A) · op(B)` in Double, for one matrix pair (no batch).
    static func naiveProduct(_ a: [Float], _ aShape: [Int], transposeA: Bool, _ b: [Float], _ bShape: [Int], transposeB: Bool) -> [Float] {
        let (m, k) = transposeA ? (aShape[1], aShape[0]) : (aShape[0], aShape[1])
        let n = transposeB ? bShape[0] : bShape[1]
        var out = [Float](repeating: 0, count: m * n)
        for row in 0..<m {
            for column in 0..<n {
                var sum = 0.0
                for inner in 0..<k {
                    let x = transposeA ? a[inner * m + row] : a[row * k + inner]
                    let y = transposeB ? b[column * k + inner] : b[inner * n + column]
                    sum += Double(x) * Double(y)
                }
                out[row * n + column] = Float(sum)
            }
        }
        return out
    }

    func testLargeProductsSplitAcrossThreadsMatchANaiveProduct() throws {
        // (m, k, n): wide B (split by columns), tall A (split by rows), both over the parallel threshold.
        for (m, k, n) in [(64, 96, 700), (700, 96, 64), (257, 129, 131)] {
            XCTAssertGreaterThan(m * n * k, BLAS.parallelThreshold)
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    let aShape = transposeA ? [k, m] : [m, k], bShape = transposeB ? [n, k] : [k, n]
                    let a = uniformTestValues(m * k, seed: 1), b = uniformTestValues(k * n, seed: 2)
                    let product = try matrixProduct(Tensor(shape: aShape, floats: a), Tensor(shape: bShape, floats: b),
                                                    transposeA: transposeA, transposeB: transposeB)
                    let expected = Self.naiveProduct(a, aShape, transposeA: transposeA, b, bShape, transposeB: transposeB)
                    assertClose(product, Tensor(shape: [m, n], floats: expected), relative: 1e-4, absolute: 1e-4,
                                "m \(m) k \(k) n \(n) transposeA \(transposeA) transposeB \(transposeB)")
                }
            }
        }
    }

    func testBatchedProductsSpreadOverThreadsMatchPerBatchProducts() throws {
        // 40 batch entries of [32, 48] × [48, 40]ᵀ: small GEMMs, spread over the threads by batch entry.
        let (batch, m, k, n) = (40, 32, 48, 40)
        let a = uniformTestValues(batch * m * k, seed: 3), b = uniformTestValues(batch * n * k, seed: 4)
        let product = try matrixProduct(Tensor(shape: [4, 10, m, k], floats: a), Tensor(shape: [4, 10, n, k], floats: b),
                                        transposeB: true)
        var expected: [Float] = []
        for entry in 0..<batch {
            expected += Self.naiveProduct(Array(a[(entry * m * k)..<((entry + 1) * m * k)]), [m, k], transposeA: false,
                                          Array(b[(entry * n * k)..<((entry + 1) * n * k)]), [n, k], transposeB: true)
        }
        assertClose(product, Tensor(shape: [4, 10, m, n], floats: expected), relative: 1e-4, absolute: 1e-4)
    }

    func testFastExpIsWithinTwoUlpOfLibm() {
        var worst: Float = 0
        var x: Float = -87.3
        while x < 88.7 {
            let expected = Foundation.exp(x)
            worst = max(worst, abs(fastExp(x) - expected) / expected)
            x += 0.0137
        }
        XCTAssertLessThan(worst, 2.5e-7, "max relative error")
        XCTAssertEqual(fastExp(0), 1)
        XCTAssertEqual(fastExp(.infinity), .infinity)
        XCTAssertEqual(fastExp(-.infinity), 0)
        XCTAssertEqual(fastExp(100), .infinity)
        XCTAssertEqual(fastExp(-100), 0)
        XCTAssert(fastExp(.nan).isNaN)
        XCTAssertEqual(fastExp(88.7) / Foundation.exp(88.7), 1, accuracy: 2.5e-7)
    }
}
