import Training
import Foundation
import TestSupport
import XCTest

/// DPO on onnxruntime-genai builder graphs: the KV-cache inputs fed empty, the present outputs ignored, q and v
/// adapted through GroupQueryAttention's packed input; on fp32 and on frozen int4 (MatMulNBits) bases.
final class BuilderTrainingTests: XCTestCase {
    func testShortRunsOnTheFp32AndInt4BuilderFixtures() throws {
        for name in ["llama-fp32", "qwen2-int4"] {
            let folder = repositoryPath("fixtures/builder/\(name)")
            let output = try temporaryDirectory(for: self)
            var options = DPOTrainingOptions(modelPath: "\(folder)/model.onnx", tokenizerPath: "\(folder)/tokenizer.json",
                                             dataPath: fixturePath("dpo/preferences.jsonl"),
                                             outputDirectory: output.path)
            options.learningRate = 1e-2
            options.batchSize = 4
            options.maxSteps = 3
            options.shuffle = false
            var losses: [Double] = []
            try DPOTrainer(options: options).train { event in
                if case .step(let metrics) = event { losses.append(metrics.objective.loss) }
            }
            XCTAssertEqual(losses.count, 3, name)
            XCTAssertEqual(losses[0], log(2), accuracy: 1e-12, "\(name): B = 0, so the policy is the reference")
            XCTAssertNotEqual(losses[2], log(2), "\(name): training moves the policy")
            XCTAssert(losses.allSatisfy(\.isFinite), name)
            XCTAssert(FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter/adapter_config.json").path),
                      "\(name): the adapter is written")
        }
    }
}
