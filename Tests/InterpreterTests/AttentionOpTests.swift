import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// com.microsoft MultiHeadAttention and ONNX Attention (23, 24) against onnxruntime one node at a time, and their
/// gradient rules against central finite differences. The cases are `tools/attention_op_cases.py`, written into
/// fixtures/attention/ops by `tools/make_attention_fixtures.py ops`.
final class AttentionOpTests: XCTestCase {
    static let folder = repositoryPath("fixtures/attention/ops")

    static func caseNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Every case, as a path without its `.onnx` extension.
    static func casePaths() throws -> [String] { try caseNames().map { "\(folder)/\($0)" } }

    /// Cases whose finite differences measure float rounding rather than the function: their forward is still
    /// compared with onnxruntime.
    static let noFiniteDifferences = [
        "mha_mask_fully_masked_row": "every score of sequence 0 is q·k − 10000 in float32, rounded to steps of ~1e-3",
    ]

    func testEveryCaseMatchesOnnxruntime() throws {
        let names = try Self.caseNames()
        XCTAssertGreaterThanOrEqual(names.count, 41, "expected the committed attention op cases")
        let failures = OpReferenceTests.referenceFailures(folder: Self.folder, names: names)
        XCTAssert(failures.isEmpty, "\(failures.count) of \(names.count) cases fail:\n" + failures.joined(separator: "\n"))
    }

    /// Every float input (query, key, value, bias, attention_bias, a float attn_mask, past key and value) against
    /// central finite differences of a random weighting of every float output (present KV and qk outputs included).
    func testGradientRulesMatchCentralFiniteDifferences() throws {
        var failures: [String] = []
        var checked = 0
        for name in try Self.caseNames() {
            let model = try Model.load(path: "\(Self.folder)/\(name).onnx")
            let feeds = try NPZ.read(path: "\(Self.folder)/\(name).inputs.npz")
            if Self.noFiniteDifferences[name] != nil { continue }
            let trainable = Set(feeds.filter { $0.value.dataType == .float && $0.value.count > 0 }.keys)
            do {
                if let problem = try GradientCheckTests.check(model, feeds: feeds, trainable: trainable) {
                    failures.append("\(name): \(problem)")
                } else {
                    checked += 1
                }
            } catch {
                failures.append("\(name): \(error)")
            }
        }
        XCTAssertGreaterThanOrEqual(checked + failures.count, 40)
        XCTAssert(failures.isEmpty, "\(failures.count) cases fail (\(checked) pass):\n" + failures.joined(separator: "\n"))
    }

    /// A fully masked row (a bool mask with no key, a −∞ float mask row, MultiHeadAttention with
    /// mask_filter_value −∞) gives a zero output row, and a zero upstream gradient gives zero gradients, never NaN.
    func testFullyMaskedRowsAreZeroAndNaNSafe() throws {
        // Y [B, Nq, S, 4]: query row 0, or row 1, of batch 0's head 0.
        for (name, row) in [("attention_bool_mask_fully_masked_row", 0), ("attention_float_mask_minus_infinity_row", 1)] {
            let model = try Model.load(path: "\(Self.folder)/\(name).onnx")
            let feeds = try NPZ.read(path: "\(Self.folder)/\(name).inputs.npz")
            try assertFiniteGradients(model, feeds: feeds, trainable: ["Q", "K", "V"], name: name, maskedRow: (4 * row)..<(4 * row + 4))
        }
        // MultiHeadAttention with mask_filter_value −∞ and sequence 0 wholly masked: onnxruntime gives NaN there.
        let name = "mha_mask_fully_masked_row"
        var model = try Model.load(path: "\(Self.folder)/\(name).onnx")
        model.graph.nodes[0].attributes["mask_filter_value"] = .float(-.infinity)
        let feeds = try NPZ.read(path: "\(Self.folder)/\(name).inputs.npz")
        // output [B, 3, 8]: all of sequence 0.
        try assertFiniteGradients(model, feeds: feeds, trainable: ["query", "key", "value"], name: name, maskedRow: 0..<24)
    }

    /// The forward pass is finite with the masked row zero; an upstream gradient of ones (reaching the masked rows
    /// too) gives finite, non-zero gradients, and a zero upstream gradient gives exactly zero.
    private func assertFiniteGradients(_ model: Model, feeds: [String: Tensor], trainable: Set<String>, name: String,
                                       maskedRow: Swift.Range<Int>) throws {
        let zeroPass = try Session(model: model).forward(feeds, trainable: trainable)
        let zeroOutput = try XCTUnwrap(zeroPass.outputs.first { $0.key == "Y" || $0.key == "output" })
        let zeros = try zeroPass.backward([zeroOutput.key: Tensor(shape: zeroOutput.value.shape,
                                                                   floats: [Float](repeating: 0, count: zeroOutput.value.count))])
        for input in trainable.sorted() {
            XCTAssert(try XCTUnwrap(zeros[input]).floats.allSatisfy { $0 == 0 }, "\(name): a zero upstream gradient gives non-zero d\(input)")
        }
        let pass = try Session(model: model).forward(feeds, trainable: trainable)
        let (outputName, output) = try XCTUnwrap(pass.outputs.first { $0.key == "Y" || $0.key == "output" })
        XCTAssertTrue(output.floats.allSatisfy(\.isFinite), "\(name): forward has non-finite values")
        XCTAssert(output.floats[maskedRow].allSatisfy { $0 == 0 }, "\(name): the fully masked row is not zero: \(Array(output.floats[maskedRow]))")
        let gradients = try pass.backward([outputName: Tensor(shape: output.shape,
                                                              floats: [Float](repeating: 1, count: output.count))])
        for input in trainable.sorted() {
            let gradient = try XCTUnwrap(gradients[input], "\(name): no gradient for \(input)")
            XCTAssertTrue(gradient.floats.allSatisfy(\.isFinite), "\(name): gradient of \(input) has NaN or infinity")
            XCTAssertFalse(gradient.floats.allSatisfy { $0 == 0 }, "\(name): gradient of \(input) is all zero")
        }
    }

    /// Variants the interpreter does not implement are refused when the model loads, naming the node, the op, the
    /// attribute (or input) and what is supported (`tools/make_attention_fixtures.py refused`).
    func testUnsupportedVariantsAreRefusedAtLoad() throws {
        let folder = repositoryPath("fixtures/attention/refused")
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/refused.json"))
        let expected = try JSONDecoder().decode([String: [String]].self, from: data)
        XCTAssertGreaterThanOrEqual(expected.count, 6)
        for (name, fragments) in expected.sorted(by: { $0.key < $1.key }) {
            assertThrows(fragments) { try Session(model: Model.load(path: "\(folder)/\(name).onnx")) }
        }
    }
}
