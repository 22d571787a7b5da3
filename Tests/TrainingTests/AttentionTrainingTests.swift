import Foundation
import ONNXGraph
import TestSupport
import Training
import XCTest

/// DPO through ONNX Attention-23 and com.microsoft MultiHeadAttention (fixtures/attention,
/// `tools/make_attention_models.py`): q and v adapted through the op, on pairs of token ids (the fixtures carry no
/// tokenizer; their vocabulary is 128) of different lengths, so the batch is right-padded.
final class AttentionTrainingTests: XCTestCase {
    func testShortDPORunsThroughTheAttentionOps() throws {
        var generator = SeededGenerator(seed: 11)
        func ids(_ count: Int) -> [Int] { (0..<count).map { _ in Int(2 + generator.next() % 126) } }
        let pairs = (0..<4).map { index in
            TokenizedPair(promptIDs: ids(3 + index), chosenIDs: ids(4), rejectedIDs: ids(2 + index % 3), line: index + 1)
        }
        for name in ["attention23-llama", "mha-llama"] {
            let output = try temporaryDirectory(for: self)
            var options = DPOTrainingOptions(modelPath: repositoryPath("fixtures/attention/\(name)/model.onnx"), tokenizerPath: "",
                                             dataPath: "", outputDirectory: output.path)
            options.learningRate = 1e-2
            options.batchSize = 4
            options.maxSteps = 3
            options.shuffle = false
            let model = try Model.load(path: options.modelPath)
            let trainer = try DPOTrainer(options: options, model: model, padTokenID: 1, trainPairs: pairs, cacheKey: nil)
            var losses: [Double] = []
            try trainer.train { event in
                if case .step(let metrics) = event { losses.append(metrics.objective.loss) }
            }
            XCTAssertEqual(losses.count, 3, name)
            XCTAssertEqual(losses[0], log(2), accuracy: 1e-12, "\(name): B = 0, so the policy is the reference")
            XCTAssertNotEqual(losses[2], log(2), "\(name): training moves the policy")
            XCTAssert(losses.allSatisfy(\.isFinite), name)
            let adapter = try trainer.currentAdapter()
            XCTAssertEqual(adapter.a.count, 4, "\(name): q and v of 2 layers")
            XCTAssert(adapter.b.values.allSatisfy { $0.floats.allSatisfy(\.isFinite) && $0.floats.contains { $0 != 0 } },
                      "\(name): every B moved and is finite")
        }
    }
}
