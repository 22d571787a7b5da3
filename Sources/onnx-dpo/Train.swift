import ArgumentParser
import Adapters
import Training
import Foundation

/// The flags `train` and `eval` share: the model, its tokenizer, the data and how it is cut.
struct DataOptions: ParsableArguments {
    @Option(help: "The .onnx model (a causal LM with input_ids and attention_mask inputs and a logits output).")
    var model: String

    @Option(help: "The Hugging Face tokenizer.json (tokenizer_config.json beside it gives BOS/EOS/pad).")
    var tokenizer: String

    @Option(help: "Preference data: JSONL with prompt/chosen/rejected (or chosen/rejected, or pre-tokenised ids).")
    var data: String

    @Option(help: "Longest prompt + completion in tokens (TRL's max_length); 0 for no limit.")
    var maxLength = 1024

    @Option(help: "DPO β.")
    var beta = 0.1

    @Option(help: "Loss: sigmoid, ipo, hinge, robust, sigmoid_norm, sft, or a comma list (e.g. sigmoid,sft for RPO).")
    var loss = "sigmoid"

    @Option(help: "Weights of the --loss terms, comma-separated (default 1 each).")
    var lossWeights: String?

    @Option(help: "Label smoothing ε of the robust loss.")
    var labelSmoothing = 0.0

    @Option(help: "Pairs per batch.")
    var batchSize = 8

    @Option(help: "Random seed (adapter initialisation, data order, eval split).")
    var seed: UInt64 = 42

    func objective() throws -> DPOObjective {
        let types = try loss.split(separator: ",").map { name -> DPOObjective.LossType in
            guard let type = DPOObjective.LossType(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--loss: unknown loss '\(name)'; choose from \(DPOObjective.LossType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return type
        }
        let weights = try lossWeights.map { text in
            try text.split(separator: ",").map { item -> Double in
                guard let weight = Double(item.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("--loss-weights: '\(item)' is not a number")
                }
                return weight
            }
        } ?? types.map { _ in 1 }
        guard weights.count == types.count else {
            throw ValidationError("--loss-weights gives \(weights.count) weights for \(types.count) losses")
        }
        return DPOObjective(beta: beta, terms: Array(zip(types, weights)), labelSmoothing: labelSmoothing)
    }

    func trainingOptions(outputDirectory: String) throws -> DPOTrainingOptions {
        var options = DPOTrainingOptions(modelPath: model, tokenizerPath: tokenizer, dataPath: data, outputDirectory: outputDirectory)
        options.objective = try objective()
        options.data.maxLength = maxLength == 0 ? nil : maxLength
        options.batchSize = batchSize
        options.seed = seed
        return options
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train LoRA adapters with DPO; writes metrics.jsonl, checkpoints and <output-dir>/adapter (PEFT format).")

    @OptionGroup var common: DataOptions

    @Option(help: "Where metrics, checkpoints, the reference cache and the adapter go.")
    var outputDir: String

    @Option(help: "LoRA rank r.")
    var rank = 8
    @Option(help: "LoRA alpha (scale alpha/r, or alpha/√r with --rslora).")
    var alpha = 16.0
    @Option(help: "LoRA dropout (only 0 is supported for now).")
    var dropout = 0.0
    @Flag(help: "rsLoRA scaling, alpha/√r.")
    var rslora = false
    @Option(help: "Adapter initialisation: kaiming (PEFT's default) or gaussian.")
    var initialization = "kaiming"
    @Option(name: .customLong("target"), help: "Projections to adapt: q, k, v, o, mlp, all-linear, module names, globs or regexes (repeatable).")
    var targets: [String] = []

    @Option(help: "Peak learning rate.")
    var lr = 1e-6
    @Option(help: "adamw or rmsprop.")
    var optimizer = "adamw"
    @Option(help: "Weight decay.")
    var weightDecay = 0.0
    @Option(help: "Linear warm-up steps.")
    var warmupSteps = 0
    @Option(help: "constant, linear or cosine.")
    var schedule = "linear"
    @Option(help: "Clip gradients to this global norm; 0 to disable.")
    var maxGradNorm = 1.0
    @Option(help: "Micro-batches per optimiser step.")
    var gradAccum = 1
    @Option(help: "Optimiser steps (overrides --epochs).")
    var maxSteps: Int?
    @Option(help: "Passes over the data.")
    var epochs = 3
    @Flag(help: "Keep the dataset's order instead of shuffling each epoch.")
    var noShuffle = false

    @Option(help: "Held-out eval data (JSONL); otherwise --eval-fraction of --data.")
    var evalData: String?
    @Option(help: "Fraction of --data held out for eval.")
    var evalFraction = 0.0
    @Option(help: "Evaluate every N steps (and at the end).")
    var evalEvery: Int?
    @Option(help: "Write a checkpoint every N steps (and at the end).")
    var checkpointEvery: Int?
    @Option(help: "Start from this PEFT adapter folder.")
    var initAdapter: String?
    @Flag(help: "Continue from the newest checkpoint in --output-dir.")
    var resume = false
    @Flag(help: "Do not write TensorBoard event files to <output-dir>/runs.")
    var noTensorboard = false

    func run() throws {
        var options = try common.trainingOptions(outputDirectory: outputDir)
        options.lora = LoRAConfiguration(rank: rank, alpha: alpha, dropout: dropout, useRSLoRA: rslora,
                                         initialization: try parse(initialization, "--initialization"))
        if !targets.isEmpty { options.targets = targets }
        options.learningRate = lr
        options.optimizer = try parse(optimizer, "--optimizer")
        options.weightDecay = weightDecay
        options.warmupSteps = warmupSteps
        options.schedule = try parse(schedule, "--schedule")
        options.maxGradNorm = maxGradNorm > 0 ? maxGradNorm : nil
        options.gradientAccumulation = gradAccum
        options.maxSteps = maxSteps
        options.epochs = epochs
        options.shuffle = !noShuffle
        options.evalDataPath = evalData
        options.evalFraction = evalFraction
        options.evalEvery = evalEvery
        options.checkpointEvery = checkpointEvery
        options.initAdapter = initAdapter
        options.resume = resume
        options.tensorBoard = !noTensorboard

        let trainer = try DPOTrainer(options: options)
        let progress = ProgressPrinter(total: trainer.totalSteps)
        print("training \(trainer.adapted.modules.count) adapters (\(trainer.adapted.modules.map(\.modulePath).prefix(4).joined(separator: ", "))\(trainer.adapted.modules.count > 4 ? ", ..." : "")) "
              + "on \(trainer.trainPairs.count) pairs for \(trainer.totalSteps) steps")
        try trainer.train(report: progress.handle)
        progress.finish()
        print("adapter written to \((outputDir as NSString).appendingPathComponent("adapter"))")
    }

    private func parse<T: RawRepresentable>(_ value: String, _ flag: String) throws -> T where T.RawValue == String, T: CaseIterable {
        guard let parsed = T(rawValue: value) else {
            throw ValidationError("\(flag): '\(value)' is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return parsed
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reward accuracy, margins and loss of an adapter on a preference dataset.")

    @OptionGroup var common: DataOptions

    @Option(help: "The PEFT adapter folder to evaluate.")
    var adapter: String

    @Option(help: "Where the reference log-prob cache goes.")
    var outputDir = ".onnx-dpo-eval"

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        var options = try common.trainingOptions(outputDirectory: outputDir)
        options.initAdapter = adapter  // its adapter_config.json gives rank, alpha and scaling
        let metrics = try DPOTrainer(options: options).evaluateDataset()
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: metrics, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
        } else {
            for key in ["rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "loss"] {
                print("\(key): \(String(format: "%.4f", metrics[key] ?? .nan))")
            }
        }
    }
}

/// A live progress line on a terminal; plain lines otherwise (logs, CI).
final class ProgressPrinter {
    let total: Int
    let live = isatty(STDOUT_FILENO) != 0

    init(total: Int) { self.total = total }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .reference(let done, let total, let cached):
            if cached { print("reference log-probs: \(total) pairs from the cache") }
            else { emit("reference log-probs: \(done)/\(total) pairs", final: done == total) }
        case .step(let metrics):
            let step = Int(metrics["step"] ?? 0)
            let line = String(format: "step %d/%d  loss %.4f  reward acc %.2f  margin %.4f  %.0f tok/s  ETA %@",
                              step, total, metrics["loss"] ?? .nan, metrics["rewards/accuracies"] ?? .nan,
                              metrics["rewards/margins"] ?? .nan, metrics["tokens_per_second"] ?? 0,
                              Self.duration(metrics["eta_seconds"] ?? 0))
            emit(line, final: step == total)
        case .evaluation(let metrics):
            emit(String(format: "eval: loss %.4f  reward acc %.2f  margin %.4f", metrics["eval_loss"] ?? .nan,
                        metrics["eval_rewards/accuracies"] ?? .nan, metrics["eval_rewards/margins"] ?? .nan), final: true)
        case .checkpoint(let path):
            emit("checkpoint: \(path)", final: true)
        case .resumed(let step):
            print("resumed from step \(step)")
        }
    }

    func finish() { if live { print("") } }

    private func emit(_ line: String, final: Bool) {
        if live {
            FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + line + (final ? "\n" : "")).utf8))
        } else {
            print(line)
        }
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        return total >= 3600 ? String(format: "%dh%02dm", total / 3600, (total % 3600) / 60)
            : String(format: "%dm%02ds", total / 60, total % 60)
    }
}
