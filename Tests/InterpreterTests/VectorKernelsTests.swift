import Foundation
@testable import Interpreter
import Kernels
import ONNXGraph
import TestSupport
import XCTest

/// The C elementwise kernels the ops call (Sources/Kernels/vector_math.h) against the Swift they replaced, on every ISA
/// this machine runs: `kernels_exp` is `fastExp` and `kernels_sigmoid` / `kernels_quick_gelu` are `Sigmoid.apply`'s
/// formula bit for bit, and the Softmax, Sigmoid and QuickGelu ops give the same bits forward and backward whatever the
/// ISA (their values against onnxruntime and finite differences: OpReferenceTests, GradientCheckTests).
final class VectorKernelsTests: ISATestCase {
    /// Every 997th float bit pattern (all signs, exponents, subnormals, infinities and NaN payloads: 4.3 million values)
    /// and the range the exponential is not flushed in, densely.
    static let values: [Float] = {
        var values = stride(from: UInt64(0), through: UInt64(UInt32.max), by: 997).map { Float(bitPattern: UInt32($0)) }
        var x: Float = -90
        while x < 90 { values.append(x); x += 0.000_37 }
        values += [.infinity, -.infinity, .nan, -.nan, .signalingNaN, 0, -0.0, 88.72283935546875, -87.33654022216797]
        return values
    }()

    func testExpIsFastExpBitForBitOnEveryISA() {
        let x = Self.values
        let expected = x.map { fastExp($0).bitPattern }
        for isa in isas {
            XCTAssertEqual(kernels_force_isa(isa), isa)
            var y = [Float](repeating: 0, count: x.count)
            kernels_exp(x.count, x, &y)
            let differing = (0..<x.count).filter { y[$0].bitPattern != expected[$0] }
            XCTAssert(differing.isEmpty, "\(name(isa)): \(differing.count) of \(x.count) differ from fastExp, first "
                      + differing.prefix(3).map { "e^\(x[$0]) = \(y[$0]) not \(fastExp(x[$0]))" }.joined(separator: ", "))
        }
    }

    func testSigmoidAndQuickGeluAreTheSwiftFormulaBitForBitOnEveryISA() {
        let x = Self.values
        let sigmoid = x.map { Sigmoid.apply($0).bitPattern }
        for alpha: Float in [1, 1.702] {
            let quick = x.map { ($0 * Sigmoid.apply(alpha * $0)).bitPattern }
            for isa in isas {
                XCTAssertEqual(kernels_force_isa(isa), isa)
                var y = [Float](repeating: 0, count: x.count)
                kernels_sigmoid(x.count, x, &y)
                XCTAssertEqual(zip(y, sigmoid).filter { $0.bitPattern != $1 }.count, 0, "\(name(isa)) sigmoid")
                kernels_quick_gelu(x.count, alpha, x, &y)
                XCTAssertEqual(zip(y, quick).filter { $0.bitPattern != $1 }.count, 0, "\(name(isa)) quick_gelu \(alpha)")
            }
        }
    }

    /// The gated kernels (`GatedQuickGelu`) are QuickGelu's kernels and a product, forward and backward, bit for bit
    /// on every ISA, each gradient alone or both.
    func testGatedQuickGeluIsQuickGeluThenAProductBitForBitOnEveryISA() {
        // Every 16th value and the special ones: the elementwise formula is QuickGelu's, checked on all values above.
        let gate = stride(from: 0, to: Self.values.count, by: 16).map { Self.values[$0] } + Self.values.suffix(9)
        let up = gate.reversed().map { $0 * 0.5 + 0.25 }, dy = gate.map { 1 - $0 * 0.125 }
        for alpha: Float in [1, 1.702] {
            for isa in isas {
                XCTAssertEqual(kernels_force_isa(isa), isa)
                let n = gate.count
                var activated = [Float](repeating: 0, count: n), y = [Float](repeating: 0, count: n)
                kernels_quick_gelu(n, alpha, gate, &activated)
                kernels_gated_quick_gelu(n, alpha, gate, up, &y)
                XCTAssertEqual(zip(y, zip(activated, up).map(*)).filter { $0.bitPattern != $1.bitPattern }.count, 0,
                               "\(name(isa)) gated forward \(alpha)")
                var dActivation = [Float](repeating: 0, count: n)
                kernels_quick_gelu_backward(n, alpha, zip(dy, up).map(*), gate, &dActivation)
                var dGate = [Float](repeating: 0, count: n), dUp = [Float](repeating: 0, count: n)
                kernels_gated_quick_gelu_backward(n, alpha, dy, gate, up, &dGate, &dUp)
                XCTAssertEqual(zip(dGate, dActivation).filter { $0.bitPattern != $1.bitPattern }.count, 0, "\(name(isa)) dgate \(alpha)")
                XCTAssertEqual(zip(dUp, zip(dy, activated).map(*)).filter { $0.bitPattern != $1.bitPattern }.count, 0,
                               "\(name(isa)) dup \(alpha)")
                var alone = [Float](repeating: 0, count: n)
                kernels_gated_quick_gelu_backward(n, alpha, dy, gate, up, &alone, nil)
                XCTAssertEqual(alone.map(\.bitPattern), dGate.map(\.bitPattern), "\(name(isa)) dgate alone")
                kernels_gated_quick_gelu_backward(n, alpha, dy, gate, up, nil, &alone)
                XCTAssertEqual(alone.map(\.bitPattern), dUp.map(\.bitPattern), "\(name(isa)) dup alone")
            }
        }
    }

    /// The op cases of fixtures/ops run forward and backward under each ISA: the same bits every time.
    func testOpsGiveTheSameBitsForwardAndBackwardOnEveryISA() throws {
        let cases = try OpReferenceTests.caseNames().filter {
            $0.hasPrefix("softmax") || $0.hasPrefix("sigmoid") || $0.hasPrefix("quickgelu")
        }
        XCTAssertGreaterThan(cases.count, 15)
        for name in cases {
            let model = try Model.load(path: "\(OpReferenceTests.folder)/\(name).onnx")
            let feeds = try NPZ.read(path: "\(OpReferenceTests.folder)/\(name).inputs.npz")
            let trainable = Set(feeds.filter { $0.value.dataType == .float && $0.value.count > 0 }.keys)
            let session = try Session(model: model, optimize: false)
            var results: [[UInt32]] = []
            for isa in isas {
                XCTAssertEqual(kernels_force_isa(isa), isa)
                let pass = try session.forward(feeds, trainable: trainable)
                var bits: [UInt32] = []
                var seeds: [String: Tensor] = [:]
                for (output, value) in pass.outputs.sorted(by: { $0.key < $1.key }) {
                    bits += value.floats.map(\.bitPattern)
                    if value.dataType == .float {
                        seeds[output] = Tensor(shape: value.shape, floats: uniformTestValues(value.count, seed: 3))
                    }
                }
                if !trainable.isEmpty && !seeds.isEmpty {
                    for (_, gradient) in try pass.backward(seeds).sorted(by: { $0.key < $1.key }) {
                        bits += gradient.floats.map(\.bitPattern)
                    }
                }
                results.append(bits)
            }
            for index in results.indices.dropFirst() {
                XCTAssertEqual(results[index], results[0], "\(name): \(self.name(isas[index])) differs from \(self.name(isas[0]))")
            }
        }
    }

    private func name(_ isa: kernels_isa) -> String { String(cString: kernels_isa_name(isa)) }
}
