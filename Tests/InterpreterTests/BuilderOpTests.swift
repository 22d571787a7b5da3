import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// The ops of onnxruntime-genai builder graphs (ReduceSum, SimplifiedLayerNormalization and the com.microsoft ops
/// SkipSimplifiedLayerNormalization, GroupQueryAttention, MatMulNBits, GatherBlockQuantized) against onnxruntime one
/// node at a time, and their gradient rules against central finite differences. The cases are
/// `tools/builder_op_cases.py`, written into fixtures/builder/ops by `tools/make_builder_fixtures.py ops`.
final class BuilderOpTests: XCTestCase {
    static let folder = repositoryPath("fixtures/builder/ops")

    /// Every case, as a path without its `.onnx` extension.
    static func casePaths() throws -> [String] { try caseNames().map { "\(folder)/\($0)" } }

    static func caseNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Inputs that never get a gradient by design: MatMulNBits' quantised weight, scales and zero points stay frozen
    /// (a LoRA adapter trains beside them); integer inputs are skipped anyway.
    static let frozenInputs: [String: Set<String>] = ["MatMulNBits": ["scales", "zero_points"]]

    func testEveryCaseMatchesOnnxruntime() throws {
        let names = try Self.caseNames()
        XCTAssertGreaterThanOrEqual(names.count, 30, "expected the committed builder op cases")
        let failures = OpReferenceTests.referenceFailures(folder: Self.folder, names: names)
        XCTAssert(failures.isEmpty, "\(failures.count) of \(names.count) cases fail:\n" + failures.joined(separator: "\n"))
    }

    func testGradientRulesMatchCentralFiniteDifferences() throws {
        var failures: [String] = []
        var checked = 0
        for name in try Self.caseNames() {
            let model = try Model.load(path: "\(Self.folder)/\(name).onnx")
            let feeds = try NPZ.read(path: "\(Self.folder)/\(name).inputs.npz")
            let frozen = Self.frozenInputs[model.graph.nodes[0].opType] ?? []
            let trainable = Set(feeds.filter { $0.value.dataType == .float && $0.value.count > 0 && !frozen.contains($0.key) }.keys)
            if trainable.isEmpty { continue }
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
        XCTAssertGreaterThanOrEqual(checked + failures.count, 25)
        XCTAssert(failures.isEmpty, "\(failures.count) cases fail (\(checked) pass):\n" + failures.joined(separator: "\n"))
    }

    /// MatMulNBits never computes a gradient for its quantised weight, scales or zero points, even when asked.
    func testMatMulNBitsGivesNoWeightGradient() throws {
        let name = "matmulnbits_4bit_zero_points"
        let model = try Model.load(path: "\(Self.folder)/\(name).onnx")
        let feeds = try NPZ.read(path: "\(Self.folder)/\(name).inputs.npz")
        let pass = try Session(model: model).forward(feeds, trainable: ["a", "scales"])
        let output = try XCTUnwrap(pass.outputs["y"])
        let gradients = try pass.backward(["y": Tensor(shape: output.shape, floats: [Float](repeating: 1, count: output.count))])
        XCTAssertTrue(try XCTUnwrap(gradients["scales"]).floats.allSatisfy { $0 == 0 })
        XCTAssertFalse(try XCTUnwrap(gradients["a"]).floats.allSatisfy { $0 == 0 })
    }

    /// Variants the interpreter does not implement are refused when the model loads, naming the node, the op, the
    /// attribute (or input) and what is supported (`tools/make_builder_fixtures.py refused`).
    func testUnsupportedVariantsAreRefusedAtLoad() throws {
        let folder = repositoryPath("fixtures/builder/refused")
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/refused.json"))
        let expected = try JSONDecoder().decode([String: [String]].self, from: data)
        XCTAssertGreaterThanOrEqual(expected.count, 6)
        for (name, fragments) in expected.sorted(by: { $0.key < $1.key }) {
            assertThrows(fragments) { try Session(model: Model.load(path: "\(folder)/\(name).onnx")) }
        }
    }
}
