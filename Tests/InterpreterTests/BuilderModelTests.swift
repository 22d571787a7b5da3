import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

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
            let difference = maxDifferenceAtRealTokens(logits, reference, mask: mask)
            print("\(fixture.name): max |ours − onnxruntime| at real tokens \(difference)")
            XCTAssertLessThan(difference, 1e-4, fixture.name)
            XCTAssertEqual(outputs["present.0.key"]?.shape, [2, 2, mask.shape[1], 16], fixture.name)
        }
    }

    /// MatMulNBits unpacks its initializer weight once, when the session is built (`PreparingOperator`), and reads it
    /// directly for a few rows (decoding): a weight replaced with `setInitializer` is prepared again.
    func testAReplacedQuantisedWeightIsPreparedAgain() throws {
        let fixture = try XCTUnwrap(try BuilderFixture.all().first { $0.precision == "int4" })
        let model = try fixture.model()
        let node = try XCTUnwrap(model.graph.nodes.first { $0.opType == "MatMulNBits" })
        let weight = try XCTUnwrap(model.graph.initializers.first { $0.name == node.inputs[1] })
        let original = try model.loadTensor(weight)
        var feeds = ["input_ids": Tensor(shape: [1, 3], int64s: [5, 9, 2]), "attention_mask": Tensor(shape: [1, 3], int64s: [1, 1, 1])]
        feeds.merge(try KVCacheInputs(model: model).emptyFeeds(batch: 1)) { a, _ in a }
        let session = try Session(model: model)
        let before = try XCTUnwrap(session.run(feeds)["logits"]).floats
        // Every nibble 0 instead: a different weight.
        try session.setInitializer(weight.name, Tensor(shape: original.shape, int64s: [Int64](repeating: 0, count: original.count),
                                                       dataType: original.dataType))
        let changed = try XCTUnwrap(session.run(feeds)["logits"]).floats
        XCTAssertNotEqual(changed, before)
        try session.setInitializer(weight.name, original)
        XCTAssertEqual(try XCTUnwrap(session.run(feeds)["logits"]).floats, before)
    }

    /// `inspect` names what kind of file it is.
    func testFormatNamesTheBuilderTheQuantisationTheCacheAndTheAttentionOp() throws {
        for fixture in try BuilderFixture.all() {
            let format = ModelFormat(model: try fixture.model())
            XCTAssert(format.producer.hasPrefix("onnxruntime-genai model builder"), fixture.name)
            XCTAssertEqual(format.attentionPerLayer, ["com.microsoft.GroupQueryAttention", "com.microsoft.GroupQueryAttention"])
            XCTAssertEqual(format.kvCacheInputs.count, 4)
            XCTAssertEqual(format.quantization, fixture.precision == "int4"
                ? "GatherBlockQuantized 4-bit, block 32 (1 node); MatMulNBits 4-bit, block 32 (11 nodes)" : "none", fixture.name)
        }
        let exported = ModelFormat(model: try ExportFixture.named("llama-dynamo").model())
        XCTAssertEqual(exported.producer, "exported (attention decomposed into MatMul and Softmax)")
        XCTAssertEqual(exported.attentionPerLayer, ["Softmax (decomposed)", "Softmax (decomposed)"])
        XCTAssertEqual(exported.kvCacheInputs, [])
    }

    /// GroupQueryAttention sees the mask only as row lengths: a left-padded batch is refused, naming why.
    func testALeftPaddedMaskIsRefused() throws {
        let model = try BuilderFixture.all()[0].model()
        try KVCacheInputs.checkRightPadded(Tensor(shape: [2, 3], int64s: [1, 1, 1, 1, 1, 0]), model: model)
        assertThrows(["attention_mask", "row 1 is not right-padded", "GroupQueryAttention"]) {
            try KVCacheInputs.checkRightPadded(Tensor(shape: [2, 3], int64s: [1, 1, 1, 0, 1, 1]), model: model)
        }
    }
}
