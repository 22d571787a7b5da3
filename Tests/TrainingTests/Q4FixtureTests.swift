import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import Training
import XCTest

/// An onnx-community-style q4 file (fixtures/q4/llama-q4, `tools/make_q4_fixtures.py`): the tiny Llama of
/// fixtures/models/llama-torchscript, slimmed, with every MatMul made a 4-bit MatMulNBits by onnxruntime's
/// `MatMulNBitsQuantizer` as transformers.js writes `model_q4.onnx` (block 32, symmetric, accuracy_level 4) on a
/// decomposed attention: it runs as onnxruntime computes the exact dequantised product, q and v are its int4
/// projections, and DPO trains adapters beside them.
final class Q4FixtureTests: XCTestCase {
    static let folder = repositoryPath("fixtures/q4/llama-q4")
    static let tokenizer = repositoryPath("fixtures/models/llama-torchscript/tokenizer.json")

    /// onnxruntime's logits were made at accuracy_level 0 (the file says 4, which lets onnxruntime quantise the
    /// activations to int8; onnx-dpo reads the level as a hint and computes the exact product).
    func testLogitsMatchOnnxruntimeAtAccuracyLevelZero() throws {
        let model = try Model.load(path: "\(Self.folder)/model.onnx")
        XCTAssertEqual(model.graph.nodes.filter { $0.opType == "MatMulNBits" }.count, 15, "7 projections per layer and the LM head")
        let feeds = try NPZ.read(path: "\(Self.folder)/inputs.npz")
        let logits = try XCTUnwrap(try Session(model: model).run(feeds)["logits"])
        let reference = try XCTUnwrap(try NPZ.read(path: "\(Self.folder)/ort_logits.npz")["logits"])
        XCTAssertEqual(logits.shape, reference.shape)
        let difference = maxDifferenceAtRealTokens(logits, reference, mask: try XCTUnwrap(feeds["attention_mask"]))
        print("llama-q4: max |ours − onnxruntime| at real tokens \(difference)")
        XCTAssertLessThan(difference, 1e-4)
    }

    func testQAndVAreTheInt4Projections() throws {
        let model = try Model.load(path: "\(Self.folder)/model.onnx")
        let targets = try LoRATargets.find(in: model)
        XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v])
        XCTAssertEqual(targets.map(\.layer), [0, 0, 1, 1])
        for target in targets {
            XCTAssertEqual(target.layout.storage, .matMulNBits(bits: 4, blockSize: 32), "\(target)")
            XCTAssertEqual(target.inFeatures, 64)
            XCTAssertEqual(target.outFeatures, target.kind == .q ? 64 : 32, "4 query heads, 2 key/value heads of 16")
        }
    }

    func testDPOStepsHaveFiniteGradientsAndLowerTheLoss() throws {
        try assertFullBatchDPOStepsLowerTheLoss(model: "\(Self.folder)/model.onnx", tokenizer: Self.tokenizer,
                                                output: try temporaryDirectory(for: self), label: "llama-q4")
    }
}
