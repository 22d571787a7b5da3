import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Agreement with TRL + PEFT: `tools/reference_dpo.py` ran TRL's DPOTrainer with a PEFT LoRA (r 8, alpha 16, q_proj
/// and v_proj, B initialised non-zero) on the torch model that fixtures/models/llama-dynamo was exported from, β 0.1,
/// sigmoid loss, AdamW lr 1e-3 constant, batch 4, 5 steps in dataset order, and saved its initial adapter, per-step
/// metrics and final adapter. The same run here, on the ONNX export, must give the same numbers.
final class TRLParityTests: XCTestCase {
    static let reference = fixturePath("trl")

    func testFiveDPOStepsMatchTRLAndPEFT() throws {
        let output = try temporaryDirectory(for: self)
        var options = DPOTrainingOptions(
            modelPath: fixturePath("models/llama-dynamo/model.onnx"),
            tokenizerPath: fixturePath("models/llama-dynamo/tokenizer.json"),
            dataPath: fixturePath("dpo/preferences.jsonl"), outputDirectory: output.path)
        options.initAdapter = "\(Self.reference)/initial_adapter"
        options.objective = DPOObjective(beta: 0.1)
        options.learningRate = 1e-3
        options.schedule = .constant
        options.warmupSteps = 0
        options.weightDecay = 0
        options.maxGradNorm = 1
        options.batchSize = 4
        options.maxSteps = 5
        options.shuffle = false
        var reported: [StepMetrics] = []
        let trainer = try DPOTrainer(options: options)
        XCTAssert(trainer.scoresCompletionsOnly, "the run computes logits only at scored positions")
        try trainer.train { event in
            if case .step(let metrics) = event { reported.append(metrics) }
        }
        // Under TRL's names, as metrics.jsonl writes them.
        let steps = try reported.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) as? [String: Double] ?? [:] }

        let data = try Data(contentsOf: URL(fileURLWithPath: "\(Self.reference)/metrics.json"))
        let expected = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [[String: Double]])
        XCTAssertEqual(steps.count, expected.count)
        let compared = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                        "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"]
        for (index, (ours, theirs)) in zip(steps, expected).enumerated() {
            for key in compared {
                let (a, b) = (try XCTUnwrap(ours[key], key), try XCTUnwrap(theirs[key], key))
                XCTAssertEqual(a, b, accuracy: 1e-6 + 1e-4 * abs(b), "step \(index + 1) \(key)")
            }
        }

        let modules = trainer.adapted.modules
        let final = try trainer.currentAdapter()
        let torch = try AdapterFolder.read("\(Self.reference)/final_adapter", modules: modules)
        for module in modules {
            for (ours, theirs, name) in [(final.a, torch.a, "lora_A"), (final.b, torch.b, "lora_B")] {
                assertClose(try XCTUnwrap(ours[module.modulePath]), try XCTUnwrap(theirs[module.modulePath]),
                            relative: 1e-4, absolute: 1e-6, "\(module.modulePath).\(name)")
            }
        }
    }
}
