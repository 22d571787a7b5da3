import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Whole models through ONNX Attention-23 and com.microsoft MultiHeadAttention (fixtures/attention,
/// `tools/make_attention_models.py`): a tiny Llama exported by torch's dynamo exporter at opset 23, and the same
/// graph with each Attention replaced by MultiHeadAttention (key_padding_mask, unidirectional). Logits against
/// onnxruntime's on a right-padded batch.
final class AttentionModelTests: XCTestCase {
    struct Fixture: Decodable {
        var name: String
        var path: String
        /// The attention op the model uses: `Attention` or `MultiHeadAttention`.
        var attention: String
        var layers: Int

        var folder: String { (repositoryPath(path) as NSString).deletingLastPathComponent }
        func model() throws -> Model { try Model.load(path: repositoryPath(path)) }
        func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }
        func ortLogits() throws -> Tensor { try XCTUnwrap(try NPZ.read(path: "\(folder)/ort_logits.npz")["logits"]) }

        static func all() throws -> [Fixture] {
            let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("fixtures/attention/models.json")))
            return try JSONDecoder().decode([Fixture].self, from: data)
        }
    }

    func testLogitsMatchOnnxruntime() throws {
        let fixtures = try Fixture.all()
        XCTAssertEqual(Set(fixtures.map(\.attention)), ["Attention", "MultiHeadAttention"])
        for fixture in fixtures {
            let model = try fixture.model()
            XCTAssertEqual(model.graph.nodes.filter { $0.opType == fixture.attention }.count, fixture.layers, fixture.name)
            XCTAssertFalse(model.graph.nodes.contains { $0.opType == "Softmax" }, "\(fixture.name): attention is one op")
            let feeds = try fixture.inputs()
            let mask = try XCTUnwrap(feeds["attention_mask"])
            XCTAssert(mask.int64s.contains(0), "\(fixture.name): the reference batch should contain padding")
            let logits = try XCTUnwrap(try Session(model: model).run(feeds)["logits"])
            let reference = try fixture.ortLogits()
            XCTAssertEqual(logits.shape, reference.shape, fixture.name)
            let difference = maxDifferenceAtRealTokens(logits, reference, mask: mask)
            print("\(fixture.name): max |ours − onnxruntime| at real tokens \(difference)")
            XCTAssertLessThan(difference, 1e-4, fixture.name)
        }
    }

    /// `inspect` names the attention op of each layer.
    func testFormatNamesTheAttentionOpPerLayer() throws {
        for fixture in try Fixture.all() {
            let format = ModelFormat(model: try fixture.model())
            let op = fixture.attention == "MultiHeadAttention" ? "com.microsoft.MultiHeadAttention" : "Attention"
            XCTAssertEqual(format.attentionPerLayer, [String](repeating: op, count: fixture.layers), fixture.name)
            XCTAssert(format.text.contains("attention per layer: \(op) ×2"), format.text)
        }
    }
}
