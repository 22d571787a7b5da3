import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// One onnxruntime-genai builder fixture (`tools/make_builder_fixtures.py models`): a tiny Llama or Qwen2 built with
/// `-p fp32` or `-p int4`, the batch it was run on and onnxruntime's logits (empty past, MatMulNBits at
/// accuracy_level 0).
struct BuilderFixture: Decodable {
    var name: String
    var path: String
    var architecture: String
    var precision: String

    static func all() throws -> [BuilderFixture] {
        let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("fixtures/builder/fixtures.json")))
        return try JSONDecoder().decode([BuilderFixture].self, from: data)
    }

    var folder: String { (repositoryPath(path) as NSString).deletingLastPathComponent }
    func model() throws -> Model { try Model.load(path: repositoryPath(path)) }
    func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }
    func ortLogits() throws -> Tensor { try XCTUnwrap(try NPZ.read(path: "\(folder)/ort_logits.npz")["logits"]) }
}

/// The builder graphs run forward as onnxruntime runs them (SimplifiedLayerNormalization, GroupQueryAttention with
/// packed qkv and rotary, SkipSimplifiedLayerNormalization, ReduceSum at opset 22; MatMulNBits and
/// GatherBlockQuantized in the int4 builds), with the KV-cache inputs fed empty.
final class BuilderModelTests: XCTestCase {
    func testEveryBuilderFixtureMatchesOnnxruntimeLogits() throws {
        let fixtures = try BuilderFixture.all()
        XCTAssertEqual(Set(fixtures.map(\.precision)), ["fp32", "int4"])
        XCTAssertGreaterThanOrEqual(Set(fixtures.map(\.architecture)).count, 2)
        for fixture in fixtures {
            let model = try fixture.model()
            let cache = try KVCacheInputs(model: model)
            XCTAssertEqual(cache.inputs.count, 4, "\(fixture.name): past key and value of 2 layers")
            XCTAssert(cache.inputs.allSatisfy { $0.heads == 2 && $0.headSize == 16 }, "\(fixture.name): \(cache.inputs)")
            var feeds = try fixture.inputs()
            let mask = try XCTUnwrap(feeds["attention_mask"])
            XCTAssert(mask.int64s.contains(0), "\(fixture.name): the reference batch should contain padding")
            feeds.merge(cache.emptyFeeds(batch: mask.shape[0])) { a, _ in a }
            let outputs = try Session(model: model).run(feeds)
            let logits = try XCTUnwrap(outputs["logits"])
            let reference = try fixture.ortLogits()
            XCTAssertEqual(logits.shape, reference.shape, fixture.name)
            let difference = ModelFixtureTests.maxDifferenceAtRealTokens(logits, reference, mask: mask)
            print("\(fixture.name): max |ours − onnxruntime| at real tokens \(difference)")
            XCTAssertLessThan(difference, 1e-4, fixture.name)
            XCTAssertEqual(outputs["present.0.key"]?.shape, [2, 2, mask.shape[1], 16], fixture.name)
        }
    }
}
