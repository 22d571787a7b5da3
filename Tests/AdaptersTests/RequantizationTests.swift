@testable import Adapters
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Re-quantisation for `export --form merged` on MatMulNBits bases (`BlockQuantizedWeight`) against onnxruntime's own
/// blockwise quantizer (`quantize_matmul_4bits` / `quantize_matmul_8bits`, what the builder and `MatMulNBitsQuantizer`
/// call), in fixtures/requantization/cases.npz from `tools/make_requantization_references.py`: 4 and 8 bits, blocks 16
/// and 32, symmetric and with zero points, K = 72 (a ragged last block), a constant-zero block and exact ties.
final class RequantizationTests: XCTestCase {
    static let (rows, columns) = (8, 72)

    static func node(bits: Int, block: Int, zeroPoints: Bool) -> Node {
        Node(name: "q", opType: "MatMulNBits", domain: "com.microsoft",
             inputs: ["a", "b", "scales"] + (zeroPoints ? ["zero_points"] : []), outputs: ["y"],
             attributes: ["K": .int(columns), "N": .int(rows), "bits": .int(bits), "block_size": .int(block)])
    }

    func testRequantisingEqualsOnnxruntimesQuantizerBitForBit() throws {
        let cases = try NPZ.read(path: fixturePath("requantization/cases.npz"))
        let weight = try XCTUnwrap(cases["weight"]).floats
        var compared = 0
        for bits in [4, 8] {
            for block in [16, 32] {
                for symmetric in [true, false] {
                    let name = "bits\(bits)_block\(block)_\(symmetric ? "symmetric" : "zero_points")"
                    let codes = try XCTUnwrap(cases["\(name).codes"]), scales = try XCTUnwrap(cases["\(name).scales"])
                    let zeroPoints = try XCTUnwrap(cases["\(name).zero_points"])
                    // Start from a state unlike the answer: codes 0, scales 1, every zero point 2^(bits-1).
                    let middle = Int64(bits == 4 ? 0x88 : 0x80)
                    var quantized = try BlockQuantizedWeight(
                        node: Self.node(bits: bits, block: block, zeroPoints: !symmetric),
                        packed: Tensor(shape: codes.shape, int64s: [Int64](repeating: 0, count: codes.count), dataType: .uint8),
                        scales: Tensor(shape: scales.shape, floats: [Float](repeating: 1, count: scales.count)),
                        zeroPoints: symmetric ? nil : Tensor(shape: zeroPoints.shape, int64s: [Int64](repeating: middle, count: zeroPoints.count), dataType: .uint8))
                    let error = quantized.requantize(rows: Array(0..<Self.rows), from: weight)
                    XCTAssertEqual(quantized.codes, packedBytes(codes), "\(name): codes")
                    XCTAssertEqual(quantized.scales.map(\.bitPattern), scales.floats.map(\.bitPattern), "\(name): scales")
                    if !symmetric {
                        XCTAssertEqual(quantized.zeroPointsRaw(.uint8), packedBytes(zeroPoints), "\(name): zero points")
                    }
                    // Round to nearest: at most half a step, except where the symmetric range [-2^(b-1), 2^(b-1) - 1]
                    // clips the side opposite the block's extreme (up to one step).
                    XCTAssert(error.maximum <= (symmetric ? 1 : 0.5) + 1e-5 && error.rms > 0.15 && error.rms < 0.4, "\(name): \(error)")
                    // Dequantising and re-quantising gives the same codes; symmetric scales come back exactly (the
                    // extreme is -2^(b-1)·s, and dividing by a power of 2 is exact), scales with zero points within an
                    // ulp ((hi - lo) / (2^b - 1) of dequantised values). The merge keeps unchanged rows' bytes anyway.
                    var again = quantized
                    _ = again.requantize(rows: Array(0..<Self.rows), from: quantized.dequantized())
                    XCTAssertEqual(again.codes, quantized.codes, "\(name): codes are a fixed point")
                    if symmetric {
                        XCTAssertEqual(again.scales, quantized.scales, "\(name): scales are a fixed point")
                    } else {
                        for (a, b) in zip(again.scales, quantized.scales) { XCTAssertEqual(a, b, accuracy: 2 * b.ulp, name) }
                    }
                    compared += 1
                }
            }
        }
        XCTAssertEqual(compared, 8)
    }

    /// Rows not asked for keep their bytes, scales and zero points exactly.
    func testOnlyTheRowsAskedForChange() throws {
        let cases = try NPZ.read(path: fixturePath("requantization/cases.npz"))
        let name = "bits4_block32_zero_points"
        let (codes, scales, zeroPoints) = (cases["\(name).codes"]!, cases["\(name).scales"]!, cases["\(name).zero_points"]!)
        var quantized = try BlockQuantizedWeight(node: Self.node(bits: 4, block: 32, zeroPoints: true), packed: codes,
                                                 scales: scales, zeroPoints: zeroPoints)
        let original = quantized
        let shifted = quantized.dequantized().map { $0 + 0.01 }
        _ = quantized.requantize(rows: [2, 5], from: shifted)
        let rowBytes = quantized.codes.count / Self.rows, blocks = 3
        for row in 0..<Self.rows {
            let same = quantized.codes[(row * rowBytes)..<((row + 1) * rowBytes)] == original.codes[(row * rowBytes)..<((row + 1) * rowBytes)]
                && quantized.scales[(row * blocks)..<((row + 1) * blocks)] == original.scales[(row * blocks)..<((row + 1) * blocks)]
            XCTAssertEqual(same, ![2, 5].contains(row), "row \(row)")
        }
    }
}
