import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Whole models: every exported fixture in `fixtures/models/` (see `tools/make_fixtures.py`) gives torch's logits.
final class ModelFixtureTests: XCTestCase {
    func testEveryFixtureMatchesTorchLogits() throws {
        let fixtures = try ExportFixture.all()
        XCTAssertGreaterThanOrEqual(fixtures.count, 6)
        XCTAssert(fixtures.contains { $0.external_data }, "at least one fixture keeps its weights in external data")
        for fixture in fixtures {
            let session = try Session(model: fixture.model())
            let inputs = try fixture.inputs()
            let reference = try fixture.torchLogits()
            let logits = try XCTUnwrap(try session.run(inputs)["logits"], fixture.name)
            XCTAssertEqual(logits.shape, reference.shape, fixture.name)
            let mask = try XCTUnwrap(inputs["attention_mask"])
            XCTAssert(mask.int64s.contains(0), "\(fixture.name): the reference batch should contain padding")
            let difference = maxDifferenceAtRealTokens(logits, reference, mask: mask)
            XCTAssertLessThan(difference, 1e-4, "\(fixture.name) (\(fixture.exporter), opset \(fixture.opset))")
        }
    }

    func testInputsAreValidatedAgainstTheGraph() throws {
        let session = try Session(model: ExportFixture.named("llama-dynamo").model())
        let ids = Tensor(shape: [1, 3], int64s: [1, 2, 3])
        let mask = Tensor(shape: [1, 3], int64s: [1, 1, 1])
        assertThrows(["input 'token_ids'", "no input of that name", "input_ids"]) {
            try session.run(["token_ids": ids, "attention_mask": mask])
        }
        assertThrows(["input 'input_ids'", "expected element type int64, got float32"]) {
            try session.run(["input_ids": Tensor(shape: [1, 3], floats: [1, 2, 3]), "attention_mask": mask])
        }
        assertThrows(["input 'input_ids'", "expected rank 2", "got shape [3]"]) {
            try session.run(["input_ids": ids.reshaped([3]), "attention_mask": mask])
        }
        assertThrows(["input 'attention_mask'", "is required"]) { try session.run(["input_ids": ids]) }
        assertThrows(["input 'attention_mask'", "is 2"]) {
            try session.run(["input_ids": ids, "attention_mask": Tensor(shape: [2, 3], int64s: [1, 1, 1, 1, 1, 1])])
        }
    }

    func testUnsupportedOperatorsAreReportedAtLoadWithNodeOpDomainAndOpset() throws {
        let bad = fixturePath("graph/bad")
        let einsum = try Model.load(path: "\(bad)/unsupported_op.onnx")
        assertThrows(["my_einsum", "Einsum", "ai.onnx", "opset 17", "not implemented"]) { try Session(model: einsum) }
        XCTAssertEqual(ModelReport(model: einsum).unsupportedOperators.map(\.opType), ["Einsum"])
        let custom = try Model.load(path: "\(bad)/custom_domain.onnx")
        assertThrows(["fancy", "FancyOp", "com.example", "opset 1"]) { try Session(model: custom) }
    }
}
