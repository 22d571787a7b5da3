import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Agreement with TRL + PEFT on KTO: `tools/reference_kto.py` ran TRL 1.16's KTOTrainer with a PEFT LoRA (r 8, alpha
/// 16, q_proj and v_proj, B initialised non-zero) on the torch model that fixtures/models/llama-dynamo was exported
/// from: loss "kto", β 0.1, desirable weight 1, undesirable weight 1.25, AdamW lr 1e-3 constant, batch 4, 5 steps in
/// dataset order over fixtures/kto/unpaired.jsonl (and 3 steps of "apo_zero_unpaired"). The same runs here, on the
/// ONNX export, must give the same numbers.
final class KTOParityTests: XCTestCase {
    static let reference = fixturePath("trl-kto")
    static let data = fixturePath("kto/unpaired.jsonl")
    static let tokenizer = fixturePath("models/llama-dynamo/tokenizer.json")

    /// The settings of TRL's run as `tools/reference_kto.py` wrote them (`settings.json`).
    struct Settings: Decodable {
        struct Config: Decodable {
            var beta: Double, loss_type: String, desirable_weight: Double, undesirable_weight: Double
            var learning_rate: Double, lr_scheduler_type: String, warmup_steps: Int, weight_decay: Double
            var per_device_train_batch_size: Int, gradient_accumulation_steps: Int, max_steps: Int
        }
        struct Effective: Decodable { var max_grad_norm: Double, max_length: Int }
        struct Variant: Decodable { var kto_config_non_default: Config }
        var kto_config_non_default: Config
        var kto_config_effective: Effective
        var apo_zero_unpaired: Variant
        var grad_accum: Variant
    }

    /// The options of TRL's run, read from its settings (`variant`: one of its shorter runs): the same run here.
    static func options(output: String, variant: KeyPath<Settings, Settings.Variant>? = nil) throws -> DPOTrainingOptions {
        let settings = try JSONDecoder().decode(
            Settings.self, from: Data(contentsOf: URL(fileURLWithPath: "\(reference)/settings.json")))
        let config = variant.map { settings[keyPath: $0].kto_config_non_default } ?? settings.kto_config_non_default
        let effective = settings.kto_config_effective
        var options = DPOTrainingOptions(
            modelPath: fixturePath("models/llama-dynamo/model.onnx"), tokenizerPath: tokenizer, dataPath: data,
            outputDirectory: output)
        options.initAdapter = "\(reference)/initial_adapter"
        options.kto = KTOObjective(lossType: try XCTUnwrap(KTOObjective.LossType(rawValue: config.loss_type)),
                                   beta: config.beta, desirableWeight: config.desirable_weight,
                                   undesirableWeight: config.undesirable_weight)
        options.learningRate = config.learning_rate
        options.schedule = try XCTUnwrap(LearningRateSchedule.Shape(rawValue: config.lr_scheduler_type))
        (options.warmupSteps, options.weightDecay) = (config.warmup_steps, config.weight_decay)
        (options.batchSize, options.gradientAccumulation) = (config.per_device_train_batch_size, config.gradient_accumulation_steps)
        options.maxSteps = config.max_steps
        (options.maxGradNorm, options.data.maxLength) = (effective.max_grad_norm, effective.max_length)
        options.shuffle = false  // TRL's SequentialSampler
        return options
    }

    /// Five steps, then the final adapter evaluated on fixtures/kto/eval.jsonl (14 rows: batches of 4, 4, 4 and 2).
    func testFiveKTOStepsMatchTRLAndPEFT() throws {
        var options = try Self.options(output: try temporaryDirectory(for: self).path)
        options.evalDataPath = fixturePath("kto/eval.jsonl")
        let steps = try assertRunMatchesTRL(options, reference: Self.reference, label: "kto")
        XCTAssertEqual(steps.map { $0["kl"] == 0 }, [false, true, false, true, false],
                       "the KL estimate is clamped at 0 at steps 2 and 4, as in TRL")
    }

    /// The unpaired APO-zero loss (no KL term, no KL rows), three steps from the same adapter.
    func testThreeAPOZeroUnpairedStepsMatchTRLAndPEFT() throws {
        let options = try Self.options(output: try temporaryDirectory(for: self).path, variant: \.apo_zero_unpaired)
        XCTAssertEqual(options.kto?.lossType, .apoZeroUnpaired)
        let steps = try assertRunMatchesTRL(options, reference: "\(Self.reference)/apo_zero_unpaired", label: "apo_zero_unpaired")
        XCTAssertEqual(steps.map { $0["kl"] }, [0, 0, 0])
    }

    /// Micro-batches of 2 rows, 2 per step: KL completions rotated within blocks of 2, the KL estimate per micro-batch,
    /// and a micro-batch of desirable rows only (step 2), whose missing metrics TRL averages over the other one.
    func testGradientAccumulationMatchesTRLAndPEFT() throws {
        let options = try Self.options(output: try temporaryDirectory(for: self).path, variant: \.grad_accum)
        XCTAssertEqual([options.batchSize, options.gradientAccumulation], [2, 2])
        try assertRunMatchesTRL(options, reference: "\(Self.reference)/grad_accum", label: "grad_accum")
    }

    /// Trains with `options` and compares every step's metrics, the final adapter and (when `options` has eval data)
    /// the evaluation after the last step with TRL's run in `reference`; returns our steps under TRL's names.
    @discardableResult
    func assertRunMatchesTRL(_ options: DPOTrainingOptions, reference: String, label: String,
                             file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Double]] {
        var reported: [StepMetrics] = []
        var evaluations: [EvalMetrics] = []
        let trainer = try DPOTrainer(options: options)
        try trainer.train { event in
            if case .step(let metrics) = event { reported.append(metrics) }
            if case .evaluation(let metrics) = event { evaluations.append(metrics) }
        }
        // Under TRL's names, as metrics.jsonl writes them.
        let steps = try reported.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) as? [String: Double] ?? [:] }
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/metrics.json"))
        let expected = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [[String: Double]])
        XCTAssertEqual(steps.count, expected.count, file: file, line: line)
        let compared = ["loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
                        "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "grad_norm", "learning_rate"]
        var worst: [String: Double] = [:]
        for (index, (ours, theirs)) in zip(steps, expected).enumerated() {
            XCTAssertNil(ours["rewards/accuracies"], "KTOTrainer logs no reward accuracy", file: file, line: line)
            for key in compared {
                let (a, b) = (try XCTUnwrap(ours[key], key), try XCTUnwrap(theirs[key], key))
                XCTAssertEqual(a, b, accuracy: 1e-6 + 1e-4 * abs(b), "\(label) step \(index + 1) \(key)", file: file, line: line)
                worst[key] = max(worst[key] ?? 0, abs(a - b))
            }
        }
        print("\(label) parity, max |ours − TRL| per metric: "
              + compared.map { "\($0) \(String(format: "%.2e", worst[$0] ?? .nan))" }.joined(separator: ", "))
        if options.evalDataPath != nil {
            // transformers weighs the eval loss by the batches' rows; KTOTrainer's metrics are plain batch means.
            XCTAssertEqual(evaluations.count, 1, file: file, line: line)
            let ours = try XCTUnwrap(try JSONSerialization.jsonObject(with: JSONEncoder().encode(XCTUnwrap(evaluations.first)))
                as? [String: Double])
            let evalData = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/eval_metrics.json"))
            let theirs = try XCTUnwrap(try JSONSerialization.jsonObject(with: evalData) as? [String: Double])
            var evalWorst = 0.0
            for key in compared.prefix(10).map({ "eval_\($0)" }) {
                let (a, b) = (try XCTUnwrap(ours[key], key), try XCTUnwrap(theirs[key], key))
                XCTAssertEqual(a, b, accuracy: 1e-6 + 1e-4 * abs(b), "\(label) \(key)", file: file, line: line)
                evalWorst = max(evalWorst, abs(a - b))
            }
            XCTAssertNil(ours["eval_rewards/accuracies"], file: file, line: line)
            print("\(label) parity, evaluation max |ours − TRL| over eval_loss, eval_kl, eval_rewards/*, eval_logps/*, "
                  + "eval_logits/*, eval_entropy: \(String(format: "%.2e", evalWorst))")
        }

        let modules = trainer.adapted.modules
        let final = try trainer.currentAdapter()
        let torch = try AdapterFolder.read("\(reference)/final_adapter", modules: modules)
        var adapterWorst: Float = 0
        for module in modules {
            for (ours, theirs, name) in [(final.a, torch.a, "lora_A"), (final.b, torch.b, "lora_B")] {
                let (a, b) = (try XCTUnwrap(ours[module.modulePath]), try XCTUnwrap(theirs[module.modulePath]))
                assertClose(a, b, relative: 1e-4, absolute: 1e-6, "\(label) \(module.modulePath).\(name)", file: file, line: line)
                adapterWorst = max(adapterWorst, zip(a.floats, b.floats).map { abs($0 - $1) }.max() ?? 0)
            }
        }
        print("\(label) parity, final adapter max |ours − PEFT|: \(String(format: "%.2e", adapterWorst))")
        XCTAssert(FileManager.default.fileExists(atPath: "\(options.adapterDirectory)/adapter_model.safetensors"),
                  file: file, line: line)
        return steps
    }

    /// The step-1 gradients of every LoRA matrix against torch's (`step1_gradients.safetensors`, PEFT's parameter
    /// names), read from the checkpoint after one step: AdamW's first moment is then `(1 − β1)·g`, and step 1's
    /// gradient norm (0.064) is below the clipping threshold.
    func testStepOneGradientsMatchTorch() throws {
        let output = try temporaryDirectory(for: self)
        var options = try Self.options(output: output.path)
        options.maxSteps = 1
        options.checkpointEvery = 1
        let trainer = try DPOTrainer(options: options)
        try trainer.train()
        let arrays = try NPZ.read(path: output.appendingPathComponent("checkpoint-1/trainer_state.npz").path)
        var gradients: [String: Tensor] = [:]
        for (key, moment) in arrays where key.hasPrefix("optimizer/") && key.hasSuffix("/exp_avg") {
            let name = String(key.dropFirst("optimizer/".count).dropLast("/exp_avg".count))
            let shape = try XCTUnwrap(arrays["parameter/\(name)"]).shape
            gradients[name] = Tensor(shape: shape, floats: moment.floats.map { $0 / Float(1 - 0.9) })
        }
        let ours = try trainer.adapted.adapter(from: gradients)
        let torch = try SafeTensors.read(path: "\(Self.reference)/step1_gradients.safetensors")
        var worst: Float = 0
        for module in trainer.adapted.modules {
            for (matrix, key) in [(ours.a, PEFTAdapter.aKey(module.modulePath)), (ours.b, PEFTAdapter.bKey(module.modulePath))] {
                // PEFT's live parameter names carry the adapter's name, `default`.
                let name = key.replacingOccurrences(of: ".weight", with: ".default.weight")
                let (a, b) = (try XCTUnwrap(matrix[module.modulePath]), try XCTUnwrap(torch[name], name))
                assertClose(a, b, relative: 1e-4, absolute: 1e-8, name)
                worst = max(worst, zip(a.floats, b.floats).map { abs($0 - $1) }.max() ?? 0)
            }
        }
        print("KTO parity, step-1 gradients max |ours − torch|: \(String(format: "%.2e", worst))")
    }

    /// TRL's processed dataset: prompt, completion and KL completion ids and the labels of every row, from unpaired
    /// records and from preference pairs (unpaired as KTOTrainer unpairs them).
    func testTokenizedRowsEqualTRLs() throws {
        struct Row: Decodable {
            var prompt_ids: [Int], completion_ids: [Int], KL_completion_ids: [Int], label: Bool
        }
        struct File: Decodable { var rows: [Row] }
        for (data, reference) in [(Self.data, "tokenized.json"), (fixturePath("dpo/preferences.jsonl"), "unpaired_from_pairs.json")] {
            let file = try JSONDecoder().decode(
                File.self, from: Data(contentsOf: URL(fileURLWithPath: "\(Self.reference)/\(reference)")))
            let rows = try UnpairedDataset.load(path: data)
                .tokenized(with: try Tokenizer(path: Self.tokenizer), klBlock: 4)
            XCTAssertEqual(rows.rows.count, file.rows.count, reference)
            XCTAssertEqual(rows.labels, file.rows.map(\.label), reference)
            for (index, (ours, theirs)) in zip(rows.rows, file.rows).enumerated() {
                XCTAssertEqual(ours.promptIDs, theirs.prompt_ids, "\(reference) row \(index) prompt")
                XCTAssertEqual(ours.chosenIDs, theirs.completion_ids, "\(reference) row \(index) completion")
                XCTAssertEqual(ours.rejectedIDs, theirs.KL_completion_ids, "\(reference) row \(index) KL completion")
            }
        }
    }

    /// The CLI: `train --loss kto` writes TRL's KTO metric names and the adapter.
    func testCommandLineTrainsKTO() throws {
        let output = try temporaryDirectory(for: self)
        let run = try runOnnxDPO([
            "train", "--model", fixturePath("models/llama-dynamo/model.onnx"), "--tokenizer", Self.tokenizer,
            "--data", Self.data, "--output-dir", output.path, "--loss", "kto", "--undesirable-weight", "1.25",
            "--batch-size", "4", "--max-steps", "2", "--lr", "1e-3", "--no-tensorboard"])
        XCTAssertEqual(run.status, 0, run.standardError)
        let lines = try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        let first = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Double])
        for key in ["loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "grad_norm"] {
            XCTAssertNotNil(first[key], key)
        }
        XCTAssert(FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter/adapter_config.json").path))

        // eval on unpaired data: TRL's KTO metrics, as JSON.
        let evaluated = try runOnnxDPO([
            "eval", "--model", fixturePath("models/llama-dynamo/model.onnx"), "--tokenizer", Self.tokenizer,
            "--data", fixturePath("kto/eval.jsonl"), "--adapter", output.appendingPathComponent("adapter").path,
            "--output-dir", output.appendingPathComponent("eval").path, "--loss", "kto", "--batch-size", "4", "--json"])
        XCTAssertEqual(evaluated.status, 0, evaluated.standardError)
        let metrics = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(evaluated.standardOutput.utf8)) as? [String: Double],
                                    evaluated.standardOutput)
        XCTAssertEqual(Set(metrics.keys), ["loss", "kl", "entropy", "rewards/chosen", "rewards/rejected", "rewards/margins",
                                           "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"])

        let refused = try runOnnxDPO([
            "train", "--model", fixturePath("models/llama-dynamo/model.onnx"), "--tokenizer", Self.tokenizer,
            "--data", Self.data, "--output-dir", output.path, "--loss", "kto", "--batch-size", "1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssert(refused.standardError.contains("--batch-size must be more than 1"), refused.standardError)
        let mixed = try runOnnxDPO([
            "train", "--model", fixturePath("models/llama-dynamo/model.onnx"), "--tokenizer", Self.tokenizer,
            "--data", Self.data, "--output-dir", output.path, "--loss", "sigmoid,kto"])
        XCTAssertNotEqual(mixed.status, 0)
        XCTAssert(mixed.standardError.contains("kto and apo_zero_unpaired train alone"), mixed.standardError)
    }
}
