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
    func testFiveDPOStepsMatchTRLAndPEFT() throws {
        let trainer = try Self.assertMatchesReference(self, folder: "trl", objective: DPOObjective(beta: 0.1))
        XCTAssert(trainer.scoresCompletionsOnly, "the run computes logits only at scored positions")
    }

    /// ORPO as TRL's `ORPOTrainer` (λ = β = 0.1), no reference model (`tools/reference_orpo_simpo.py`).
    func testFiveORPOStepsMatchTRLAndPEFT() throws {
        let output = try Self.assertMatchesReference(
            self, folder: "trl-orpo", objective: DPOObjective(beta: 0.1, terms: [(.orpo, 1)]),
            extraKeys: ["nll_loss", "log_odds_ratio", "log_odds_chosen"]).options.outputDirectory
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(output)/reference_cache"), "ORPO runs no reference pass")
    }

    /// SimPO as TRL's `CPOTrainer(loss_type="simpo")`: β 2, γ 0.5, cpo_alpha 0.5.
    func testFiveSimPOStepsMatchTRLAndPEFT() throws {
        var objective = DPOObjective(beta: 2, terms: [(.simpo, 1)])
        objective.simpoGamma = 0.5
        objective.cpoAlpha = 0.5
        let output = try Self.assertMatchesReference(self, folder: "trl-simpo", objective: objective,
                                                     extraKeys: ["nll_loss"]).options.outputDirectory
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(output)/reference_cache"), "SimPO runs no reference pass")
    }

    /// DPO on an int4 base: `tools/reference_dpo_int4.py` ran the same TRL + PEFT run on the Hugging Face Llama whose
    /// weights are the dequantised int4 weights of fixtures/builder/llama-int4 (`tools/dequantize_builder_int4.py`);
    /// here the run trains on the int4 file itself (frozen MatMulNBits, KV-cache inputs fed empty), with separate q
    /// and v modules on the builder's packed qkv projection, loaded from and compared with PEFT's q_proj / v_proj.
    func testFiveDPOStepsOnTheInt4BuilderBaseMatchTRLAndPEFTOnItsDequantisedWeights() throws {
        let builder = repositoryPath("fixtures/builder/llama-int4")
        let trainer = try Self.assertMatchesReference(self, folder: "trl-int4", objective: DPOObjective(beta: 0.1),
                                                      model: "\(builder)/model.onnx", tokenizer: "\(builder)/tokenizer.json")
        XCTAssertEqual(trainer.adapted.modules.map(\.modulePath), [
            "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
        ])
        XCTAssertEqual(trainer.adapted.modules.map(\.outFeatures), [64, 32, 64, 32])
    }

    /// Trains as the reference run in `fixtures/<folder>/` did (its initial adapter, AdamW lr 1e-3 constant, clipping at
    /// 1, batch 4, `steps` steps in dataset order) and compares every step's metrics (TRL's names, plus `extraKeys`) and the
    /// final adapter. `logits/*` are not compared: ORPO's and CPO's average over every position and padding.
    @discardableResult
    static func assertMatchesReference(_ test: XCTestCase, folder: String, objective: DPOObjective,
                                       extraKeys: [String] = [], steps: Int = 5,
                                       model: String = fixturePath("models/llama-dynamo/model.onnx"),
                                       tokenizer: String = fixturePath("models/llama-dynamo/tokenizer.json")) throws -> DPOTrainer {
        let reference = fixturePath(folder)
        let output = try temporaryDirectory(for: test)
        var options = DPOTrainingOptions(
            modelPath: model,
            tokenizerPath: tokenizer,
            dataPath: fixturePath("dpo/preferences.jsonl"), outputDirectory: output.path)
        options.initAdapter = "\(reference)/initial_adapter"
        options.objective = objective
        options.learningRate = 1e-3
        options.schedule = .constant
        options.warmupSteps = 0
        options.weightDecay = 0
        options.maxGradNorm = 1
        options.batchSize = 4
        options.maxSteps = steps
        options.shuffle = false
        var reported: [StepMetrics] = []
        let trainer = try DPOTrainer(options: options)
        try trainer.train { event in
            if case .step(let metrics) = event { reported.append(metrics) }
        }
        // Under TRL's names, as metrics.jsonl writes them.
        let steps = try reported.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) as? [String: Double] ?? [:] }

        let data = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/metrics.json"))
        let expected = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [[String: Double]])
        XCTAssertEqual(steps.count, expected.count)
        let compared = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                        "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"] + extraKeys
        var largest: [String: Double] = [:]
        for (index, (ours, theirs)) in zip(steps, expected).enumerated() {
            for key in compared {
                let (a, b) = (try XCTUnwrap(ours[key], key), try XCTUnwrap(theirs[key], key))
                XCTAssertEqual(a, b, accuracy: 1e-6 + 1e-4 * abs(b), "\(folder) step \(index + 1) \(key)")
                largest[key] = max(largest[key] ?? 0, abs(a - b))
            }
        }
        print("\(folder): max |ours − reference| per metric over the steps: "
              + largest.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.2e", $0.value))" }.joined(separator: ", "))

        let modules = trainer.adapted.modules
        let final = try trainer.currentAdapter()
        let torch = try AdapterFolder.read("\(reference)/final_adapter", modules: modules)
        var adapterDifference: Float = 0
        for module in modules {
            for (ours, theirs, name) in [(final.a, torch.a, "lora_A"), (final.b, torch.b, "lora_B")] {
                let (a, b) = (try XCTUnwrap(ours[module.modulePath]), try XCTUnwrap(theirs[module.modulePath]))
                assertClose(a, b, relative: 1e-4, absolute: 1e-6, "\(folder) \(module.modulePath).\(name)")
                adapterDifference = max(adapterDifference, zip(a.floats, b.floats).map { abs($0 - $1) }.max() ?? 0)
            }
        }
        print("\(folder): max |ours − reference| over the final adapter: \(adapterDifference)")
        return trainer
    }
}
