import ArgumentParser
import Adapters
import Training
import Foundation

/// The library's defaults: the flags default to them, so `--help` shows what a run without the flag uses.
private let defaults = DPOTrainingOptions(modelPath: "", tokenizerPath: "", dataPath: "", outputDirectory: "")
private let defaultKTO = KTOObjective()

/// A `--loss` value: a DPO loss term on preference pairs, or an unpaired loss (KTO's family) on unpaired rows.
enum LossChoice: ExpressibleByArgument {
    case paired(DPOObjective.LossType)
    case unpaired(KTOObjective.LossType)

    init?(argument: String) {
        if let type = DPOObjective.LossType(argument: argument) { self = .paired(type) }
        else if let type = KTOObjective.LossType(argument: argument) { self = .unpaired(type) }
        else { return nil }
    }

    var defaultValueDescription: String {
        switch self {
        case .paired(let type): type.rawValue
        case .unpaired(let type): type.rawValue
        }
    }

    static var allValueStrings: [String] { DPOObjective.LossType.allValueStrings + KTOObjective.LossType.allValueStrings }
}

/// The model and its tokenizer: the flags of every command that trains or evaluates.
struct ModelOptions: ParsableArguments {
    @Option(help: "The .onnx model (a causal LM with input_ids and attention_mask inputs and a logits output).")
    var model: String

    @Option(help: "The output holding the logits (default: found from the graph: the [batch, sequence, vocabulary] output).")
    var logitsOutput: String?

    @Option(help: "The Hugging Face tokenizer.json (tokenizer_config.json beside it gives BOS/EOS/pad).")
    var tokenizer: String
}

/// The flags `train` and `eval` share: the model, its tokenizer, the data and how it is cut, the loss.
struct DataOptions: ParsableArguments {
    @OptionGroup var model: ModelOptions

    @Option(help: "Preference data: JSONL with prompt/chosen/rejected strings or message lists (or chosen/rejected, or pre-tokenised ids); with --loss kto or apo_zero_unpaired, unpaired prompt/completion/label records (or pairs, unpaired as TRL does).")
    var data: String

    @OptionGroup var objective: ObjectiveOptions

    /// The options these flags set, the others at their defaults.
    func trainingOptions(outputDirectory: String) -> DPOTrainingOptions {
        objective.trainingOptions(model: model, dataPath: data, outputDirectory: outputDirectory)
    }
}

/// How the data is cut and what the loss is: the flags `train`, `eval` and `iterate` share.
struct ObjectiveOptions: ParsableArguments {
    @Option(help: "A Jinja chat template for conversational data (default: the chat_template of the tokenizer_config.json beside --tokenizer).")
    var chatTemplate: String?

    @Option(help: "Longest prompt + completion in tokens (TRL's max_length); 0 for no limit.")
    var maxLength = defaults.data.maxLength ?? 0

    @Option(help: "DPO β (ORPO's λ, SimPO's and TDPO's β).")
    var beta = defaults.objective.beta

    @Option(help: ArgumentHelp("Loss, or a comma list of losses (e.g. sigmoid,sft for RPO).",
                               discussion: "orpo and simpo need no reference model (no reference pass); tdpo1 and tdpo2 run the reference every step. These four stand alone. kto (or apo_zero_unpaired) trains on unpaired data, as TRL's KTOTrainer, in dataset order, alone too."))
    var loss = CommaList(defaults.objective.terms.map { LossChoice.paired($0.type) })

    @Option(help: "Weights of the --loss terms, comma-separated (default 1 each).")
    var lossWeights: CommaList<Double>?

    @Option(help: "Label smoothing ε: of the robust loss; for sigmoid and simpo the target 1−ε (cDPO), replaced by a record's \"preference\".")
    var labelSmoothing = defaults.objective.labelSmoothing

    @Option(help: "SimPO's target reward margin γ (TRL's simpo_gamma).")
    var simpoGamma = defaults.objective.simpoGamma

    @Option(help: "Weight of SimPO's NLL term on the chosen completions (TRL's cpo_alpha; 0 for SimPO as in the paper).")
    var cpoAlpha = defaults.objective.cpoAlpha

    @Option(help: "TDPO2's weight α of the sequential KL term.")
    var tdpoAlpha = defaults.objective.tdpoAlpha

    @Option(help: "With --loss kto or apo_zero_unpaired: the weight of the desirable rows' losses (TRL's desirable_weight).")
    var desirableWeight = defaultKTO.desirableWeight

    @Option(help: "With --loss kto or apo_zero_unpaired: the weight of the undesirable rows' losses (TRL's undesirable_weight).")
    var undesirableWeight = defaultKTO.undesirableWeight

    @Option(help: "Pairs per batch (rows per batch with KTO; at least 2 for kto's KL term).")
    var batchSize = defaults.batchSize

    @Option(help: "Random seed (adapter initialisation, data order, eval split).")
    var seed = defaults.seed

    /// The unpaired loss asked for, when `--loss` names one.
    var unpairedLoss: KTOObjective.LossType? {
        loss.values.lazy.compactMap { if case .unpaired(let type) = $0 { type } else { nil } }.first
    }

    func validate() throws {
        if unpairedLoss != nil, loss.values.count > 1 || lossWeights != nil {
            throw ValidationError("--loss \(loss.values.map(\.defaultValueDescription).joined(separator: ",")): kto and apo_zero_unpaired train alone, without other losses or --loss-weights")
        }
        if let lossWeights, lossWeights.values.count != loss.values.count {
            throw ValidationError("--loss-weights gives \(lossWeights.values.count) weights for \(loss.values.count) losses")
        }
    }

    /// The options these flags set for `model` on `dataPath`, the others at their defaults.
    func trainingOptions(model: ModelOptions, dataPath: String, outputDirectory: String) -> DPOTrainingOptions {
        var options = DPOTrainingOptions(modelPath: model.model, tokenizerPath: model.tokenizer, dataPath: dataPath,
                                         outputDirectory: outputDirectory)
        let weights = lossWeights?.values ?? loss.values.map { _ in 1 }
        let paired = loss.values.compactMap { if case .paired(let type) = $0 { type } else { nil } }
        options.objective = DPOObjective(beta: beta, terms: Array(zip(paired, weights)), labelSmoothing: labelSmoothing)
        options.objective.simpoGamma = simpoGamma
        options.objective.cpoAlpha = cpoAlpha
        options.objective.tdpoAlpha = tdpoAlpha
        if let unpairedLoss {
            options.kto = KTOObjective(lossType: unpairedLoss, beta: beta, desirableWeight: desirableWeight,
                                       undesirableWeight: undesirableWeight)
            // TRL's KTOConfig samples in dataset order: the KL completions are fixed per block of rows.
            options.shuffle = false
        }
        options.data.maxLength = maxLength == 0 ? nil : maxLength
        options.batchSize = batchSize
        options.seed = seed
        options.logitsOutput = model.logitsOutput
        options.chatTemplatePath = chatTemplate
        return options
    }
}

/// How adapters are trained: LoRA, the optimiser and schedule, steps, eval and checkpoints. `train` and `iterate`
/// share them.
struct TrainingFlags: ParsableArguments {
    @Option(help: "LoRA rank r.")
    var rank = defaults.lora.rank
    @Option(help: "LoRA alpha (scale alpha/r, or alpha/√r with --rslora).")
    var alpha = defaults.lora.alpha
    @Option(help: "LoRA dropout on the adapters' input.")
    var dropout = defaults.lora.dropout
    @Flag(help: "rsLoRA scaling, alpha/√r.")
    var rslora = false
    @Option(help: "Adapter initialisation (kaiming is PEFT's default).")
    var initialization = defaults.lora.initialization
    @Option(name: .customLong("target"), help: "Projections to adapt: q, k, v, o, mlp, all-linear, module names, globs or regexes (repeatable; default: q and v).")
    var targets: [String] = []

    @Option(help: "Peak learning rate.")
    var lr = defaults.learningRate
    @Option(help: "The optimiser.")
    var optimizer = defaults.optimizer
    @Option(help: "Weight decay.")
    var weightDecay = defaults.weightDecay
    @Option(help: "Linear warm-up steps.")
    var warmupSteps = defaults.warmupSteps
    @Option(help: "The learning-rate schedule after warm-up.")
    var schedule = defaults.schedule
    @Option(help: "Clip gradients to this global norm; 0 to disable.")
    var maxGradNorm = defaults.maxGradNorm ?? 0
    @Option(help: "Micro-batches per optimiser step.")
    var gradAccum = defaults.gradientAccumulation
    @Option(help: "Optimiser steps (overrides --epochs).")
    var maxSteps: Int?
    @Option(help: "Passes over the data.")
    var epochs = defaults.epochs
    @Flag(help: "Keep the dataset's order instead of shuffling each epoch (always, with --loss kto).")
    var noShuffle = false

    @Option(help: "Fraction of --data held out for eval.")
    var evalFraction = defaults.evalFraction
    @Option(help: "Evaluate every N steps (and at the end).")
    var evalEvery: Int?
    @Option(help: "Write a checkpoint every N steps (and at the end).")
    var checkpointEvery: Int?
    @Flag(help: "Do not write TensorBoard event files to <output-dir>/runs.")
    var noTensorboard = false
    @Flag(help: "Keep activations only at block boundaries and recompute each block in the backward pass: far less memory for long sequences, about one more forward pass per step, the same gradients.")
    var gradientCheckpointing = false
    @Flag(help: "Keep attention's score matrices for the backward pass instead of recomputing them: a little faster, far more memory on long sequences.")
    var keepAttention = false

    /// Sets these flags' library options in `options`.
    func apply(to options: inout DPOTrainingOptions) {
        options.lora = LoRAConfiguration(rank: rank, alpha: alpha, dropout: dropout, useRSLoRA: rslora,
                                         initialization: initialization)
        if !targets.isEmpty { options.targets = targets }
        options.learningRate = lr
        options.optimizer = optimizer
        options.weightDecay = weightDecay
        options.warmupSteps = warmupSteps
        options.schedule = schedule
        options.maxGradNorm = maxGradNorm > 0 ? maxGradNorm : nil
        options.gradientAccumulation = gradAccum
        options.maxSteps = maxSteps
        options.epochs = epochs
        options.shuffle = options.shuffle && !noShuffle
        options.evalFraction = evalFraction
        options.evalEvery = evalEvery
        options.checkpointEvery = checkpointEvery
        options.tensorBoard = !noTensorboard
        options.gradientCheckpointing = gradientCheckpointing
        options.keepAttentionScores = keepAttention
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train LoRA adapters with DPO; writes metrics.jsonl, checkpoints and <output-dir>/adapter (PEFT format).")

    @OptionGroup var common: DataOptions

    @Option(help: "Where metrics, checkpoints, the reference cache and the adapter go.")
    var outputDir: String

    @Option(help: "Held-out eval data (JSONL); otherwise --eval-fraction of --data.")
    var evalData: String?
    @Option(help: "Start from this adapter folder (PEFT or MLX).")
    var initAdapter: String?
    @Flag(help: "Continue from the newest checkpoint in --output-dir.")
    var resume = false

    @OptionGroup var training: TrainingFlags

    @OptionGroup var processes: ProcessOptions

    /// The run these flags ask for: the one place they become library options.
    var options: DPOTrainingOptions {
        var options = common.trainingOptions(outputDirectory: outputDir)
        training.apply(to: &options)
        options.evalDataPath = evalData
        options.initAdapter = initAdapter
        options.resume = resume
        return options
    }

    func run() throws {
        try processes.run { communicator in
            let trainer = try DPOTrainer(options: options, communicator: communicator)
            guard communicator.isRoot else { try trainer.train(); return }
            let modules = trainer.adapted.modules.map(\.modulePath)
            print("training \(modules.count) adapters (\(modules.prefix(4).joined(separator: ", "))\(modules.count > 4 ? ", ..." : "")) "
                  + "on \(trainer.trainPairs.count) \(trainer.options.kto == nil ? "pairs" : "rows") for \(trainer.totalSteps) steps")
            let progress = ProgressPrinter(total: trainer.totalSteps)
            try trainer.train(report: progress.handle)
            progress.finish()
            print("adapter written to \(trainer.options.adapterDirectory)")
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reward accuracy, margins and loss of an adapter on a preference dataset.")

    @OptionGroup var common: DataOptions

    @Option(help: "The adapter folder to evaluate (PEFT or MLX).")
    var adapter: String

    @Option(help: "Where the reference log-prob cache goes.")
    var outputDir = ".onnx-dpo-eval"

    @Flag(help: "Print one JSON object.")
    var json = false

    @OptionGroup var processes: ProcessOptions

    func run() throws {
        var options = common.trainingOptions(outputDirectory: outputDir)
        options.initAdapter = adapter  // its adapter_config.json gives rank, alpha and scaling
        try processes.run { communicator in
            let metrics = try DPOTrainer(options: options, communicator: communicator).evaluateDataset()
            if communicator.isRoot { try printMetrics(metrics) }
        }
    }

    private func printMetrics(_ metrics: ObjectiveMetrics) throws {
        if json {
            print(try jsonText(metrics))
        } else {
            for label in ["rewards/accuracies", "kl", "rewards/margins", "rewards/chosen", "rewards/rejected", "loss"] {
                if let value = metrics[label] { print("\(label): \(String(format: "%.4f", value))") }
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
            let objective = metrics.objective
            let line = String(format: "step %d/%d  loss %.4f  %@  margin %.4f  %.0f tok/s  ETA %@",
                              metrics.step, total, objective.loss, Self.secondMetric(objective), objective.rewardsMargins,
                              metrics.tokensPerSecond, Self.duration(metrics.etaSeconds))
            emit(line, final: metrics.step == total)
        case .evaluation(let metrics):
            let objective = metrics.objective
            emit(String(format: "eval: loss %.4f  %@  margin %.4f", objective.loss, Self.secondMetric(objective),
                        objective.rewardsMargins), final: true)
        case .checkpoint(let path):
            emit("checkpoint: \(path)", final: true)
        case .resumed(let step):
            print("resumed from step \(step)")
        case .referenceNotCached(let reason):
            print("reference log-probs: \(reason)")
        case .staleLockTakenOver(let pid):
            print("the output folder was locked by process \(pid), which is gone; its lock was taken over")
        }
    }

    func finish() { if live { print("") } }

    /// DPO's reward accuracy, or KTO's KL estimate.
    static func secondMetric(_ objective: ObjectiveMetrics) -> String {
        objective["kl"].map { String(format: "kl %.4f", $0) } ?? String(format: "reward acc %.2f", objective.rewardsAccuracies)
    }

    func emit(_ line: String, final: Bool) {
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
