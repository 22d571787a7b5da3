import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Every op against reference outputs: one-node models and the outputs onnxruntime (or numpy) computed for them,
/// made by `tools/make_op_references.py` from the cases in `tools/op_cases/`.
final class OpReferenceTests: XCTestCase {
    static let folder = fixturePath("ops")

    static func caseNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }.sorted()
    }

    func testEveryCaseMatchesItsReference() throws {
        let names = try Self.caseNames()
        XCTAssertGreaterThan(names.count, 100, "expected the committed op reference cases")
        let failures = Self.referenceFailures(folder: Self.folder, names: names)
        XCTAssert(failures.isEmpty, "\(failures.count) of \(names.count) op cases fail:\n" + failures.joined(separator: "\n"))
    }

    /// Each case in `folder` run and compared with its reference outputs (relative 1e-5, absolute 1e-6): one line
    /// per mismatching output or failing case.
    static func referenceFailures(folder: String, names: [String]) -> [String] {
        var failures: [String] = []
        for name in names {
            do {
                let model = try Model.load(path: "\(folder)/\(name).onnx")
                let inputs = try NPZ.read(path: "\(folder)/\(name).inputs.npz")
                let expected = try NPZ.read(path: "\(folder)/\(name).outputs.npz")
                let outputs = try Session(model: model).run(inputs)
                for (outputName, reference) in expected.sorted(by: { $0.key < $1.key }) {
                    guard let actual = outputs[outputName] else {
                        failures.append("\(name): output \(outputName) missing")
                        continue
                    }
                    if let problem = closenessProblem(actual, reference, relative: 1e-5, absolute: 1e-6) {
                        failures.append("\(name).\(outputName): \(problem)")
                    }
                }
            } catch {
                failures.append("\(name): \(error)")
            }
        }
        return failures
    }

    /// Each registered op has at least one reference case, so none goes untested.
    func testEveryRegisteredOpHasReferenceCases() throws {
        var covered = Set<String>()
        for name in try Self.caseNames() {
            let model = try Model.load(path: "\(Self.folder)/\(name).onnx")
            covered.formUnion(model.graph.nodes.map(\.opType))
        }
        for path in try BuilderOpTests.casePaths() {  // the contrib ops' cases, fixtures/builder/ops
            covered.formUnion(try Model.load(path: "\(path).onnx").graph.nodes.map(\.opType))
        }
        for name in try DynamicQuantizationTests.caseNames() {  // the int8 ops' cases, fixtures/int8/ops
            covered.formUnion(try Model.load(path: "\(DynamicQuantizationTests.opsFolder)/\(name).onnx").graph.nodes.map(\.opType))
        }
        for path in try AttentionOpTests.casePaths() {  // MultiHeadAttention and Attention, fixtures/attention/ops
            covered.formUnion(try Model.load(path: "\(path).onnx").graph.nodes.map(\.opType))
        }
        // The session's internal fused ops (domain onnx_dpo) have no onnxruntime counterpart: GraphOptimizerTests
        // checks each against the chain of standard ops it replaces, bit for bit, and against finite differences.
        let registry = OperatorRegistry.standard
        let missing = registry.operatorTypes.filter { !covered.contains($0) && registry.implementation(of: $0, domain: "onnx_dpo") == nil }
        XCTAssertEqual(missing, [], "ops without reference cases")
    }
}
