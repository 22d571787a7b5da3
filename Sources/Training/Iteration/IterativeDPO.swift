import Adapters
import Foundation
import ONNXGraph
import RunReports

/// `onnx-dpo iterate`: iterative DPO as Snorkel's recipe, self-rewarding LMs, RLAIF and factuality tuning run it.
/// Each round samples K completions per prompt from the current policy, judges them into preference pairs, trains a
/// fresh adapter on them with the policy as the reference, and merges that adapter into the policy, which becomes
/// the next round's policy and reference.
///
/// Every round has its own folder, `<outputDirectory>/round-N/`:
///
///     samples.jsonl    the policy's completions (resumable: `samples.jsonl.partial` keeps whole prompts)
///     pairs.jsonl      the judged preference pairs, and judge.json, the judge's summary
///     train/           the DPO run (metrics.jsonl, checkpoints, train/adapter)
///     model.onnx       the policy with the adapter merged (and model.onnx.data when the base has external data)
///     round.json       the round's summary, written last
///
/// A stage whose output exists is not run again, so a loop killed at any point resumes where it stopped (training
/// from its newest checkpoint), and a finished loop run again with more rounds continues from its last round.
public struct IterationOptions: Sendable {
    public var modelPath: String
    public var tokenizerPath: String
    /// Prompts (JSONL with `prompt`) sampled every round.
    public var promptsPath: String
    public var outputDirectory: String
    public var rounds: Int
    /// Completions per prompt (K) and how they are sampled (the seed changes with the round).
    public var completionsPerPrompt = 4
    public var generation = GenerationOptions(maxNewTokens: 64, sampling: .sampling())
    /// Sample text prompts as one user message through the chat template (`training.chatTemplatePath`, or the
    /// tokenizer's); message-list prompts always are. Their pairs are conversational records.
    public var chat = false
    public var judge: JudgeSpecification
    /// Every round's training settings; the model, data, output folder and resumption are set per round.
    public var training: DPOTrainingOptions

    public init(modelPath: String, tokenizerPath: String, promptsPath: String, outputDirectory: String, rounds: Int,
                judge: JudgeSpecification) {
        self.modelPath = modelPath
        self.tokenizerPath = tokenizerPath
        self.promptsPath = promptsPath
        self.outputDirectory = outputDirectory
        self.rounds = rounds
        self.judge = judge
        training = DPOTrainingOptions(modelPath: modelPath, tokenizerPath: tokenizerPath, dataPath: "", outputDirectory: "")
    }
}

/// What one round did: `round.json`, and a row of the summary table.
public struct RoundSummary: Codable, Sendable, Equatable {
    public var round: Int
    /// The model that sampled (the policy) and the one the round wrote.
    public var policy: String
    public var mergedModel: String
    public var samples: SamplingSummary
    public var judge: JudgeSummary
    /// Reward accuracy, margin and loss of the round's adapter on the round's pairs (after training).
    public var rewardAccuracy: Double
    public var rewardMargin: Double
    public var loss: Double
    public var trainingSteps: Int

    enum CodingKeys: String, CodingKey {
        case round, policy, samples, judge, loss
        case mergedModel = "merged_model", rewardAccuracy = "reward_accuracy", rewardMargin = "reward_margin"
        case trainingSteps = "training_steps"
    }
}

/// Progress of an iterative run.
public enum IterationEvent: Sendable {
    /// A stage of a round starts, or is skipped because its output exists.
    case stage(round: Int, name: String, skipped: Bool)
    case sampling(round: Int, done: Int, total: Int)
    case training(round: Int, TrainingEvent)
    case roundFinished(RoundSummary)
}

public final class IterativeDPO {
    public let options: IterationOptions

    public init(options: IterationOptions) throws {
        guard options.rounds >= 1 else {
            throw TrainingError.invalidOption(option: "rounds", reason: "must be at least 1, got \(options.rounds)")
        }
        try options.generation.sampling.validate()
        try options.training.validate()
        self.options = options
    }

    public func folder(round: Int) -> String {
        (options.outputDirectory as NSString).appendingPathComponent("round-\(round)")
    }

    /// Runs (or resumes) every round; returns their summaries and writes `<outputDirectory>/summary.json`.
    @discardableResult
    public func run(report: (IterationEvent) -> Void = { _ in }) throws -> [RoundSummary] {
        try FileManager.default.createDirectory(atPath: options.outputDirectory, withIntermediateDirectories: true)
        let lock = try OutputLock.folder(options.outputDirectory)
        defer { lock.release() }
        var summaries: [RoundSummary] = []
        var policy = options.modelPath
        for round in 1...options.rounds {
            let summary: RoundSummary
            do {
                summary = try runRound(round, policy: policy, report: report)
            } catch let error as TrainingError {
                throw TrainingError.roundFailed(round: round, folder: folder(round: round), reason: "\(error)")
            }
            summaries.append(summary)
            policy = summary.mergedModel
            report(.roundFinished(summary))
        }
        try write(summaries, to: (options.outputDirectory as NSString).appendingPathComponent("summary.json"))
        return summaries
    }

    private func runRound(_ round: Int, policy: String, report: (IterationEvent) -> Void) throws -> RoundSummary {
        let folder = folder(round: round)
        func path(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        let summaryPath = path("round.json")
        if let data = FileManager.default.contents(atPath: summaryPath),
           let done = try? JSONDecoder().decode(RoundSummary.self, from: data) {
            report(.stage(round: round, name: "round", skipped: true))
            return done
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)

        // 1. Sample from the policy.
        let samplesPath = path("samples.jsonl"), samplingSummaryPath = path("sampling.json")
        var sampling = SamplingRun(modelPath: policy, tokenizerPath: options.tokenizerPath, promptsPath: options.promptsPath,
                                   outputPath: samplesPath)
        sampling.completionsPerPrompt = options.completionsPerPrompt
        sampling.generation = options.generation
        sampling.generation.seed = options.generation.seed &+ UInt64(round) &* 0x9E37_79B9_7F4A_7C15
        sampling.resume = true
        sampling.chat = options.chat
        sampling.chatTemplatePath = options.training.chatTemplatePath
        let samples: SamplingSummary
        if let done = read(SamplingSummary.self, samplingSummaryPath), FileManager.default.fileExists(atPath: samplesPath) {
            report(.stage(round: round, name: "sample", skipped: true))
            samples = done
        } else {
            report(.stage(round: round, name: "sample", skipped: false))
            samples = try Sampling.run(sampling) { report(.sampling(round: round, done: $0, total: $1)) }
            try write(samples, to: samplingSummaryPath)
        }

        // 2. Judge the samples into pairs.
        let pairsPath = path("pairs.jsonl"), judgeSummaryPath = path("judge.json")
        let judged: JudgeSummary
        if let done = read(JudgeSummary.self, judgeSummaryPath), FileManager.default.fileExists(atPath: pairsPath) {
            report(.stage(round: round, name: "judge", skipped: true))
            judged = done
        } else {
            report(.stage(round: round, name: "judge", skipped: false))
            var specification = options.judge
            specification.chatTemplatePath = specification.chatTemplatePath ?? options.training.chatTemplatePath
            let judge = try specification.makeJudge(modelPath: policy, tokenizerPath: options.tokenizerPath)
            judged = try Judging.run(input: samplesPath, output: pairsPath, judge: judge, selection: options.judge.selection,
                                     margin: options.judge.margin)
            try write(judged, to: judgeSummaryPath)
        }

        // 3. Train a fresh adapter on the pairs, the policy as the reference.
        var training = options.training
        training.modelPath = policy
        training.tokenizerPath = options.tokenizerPath
        training.dataPath = pairsPath
        training.outputDirectory = path("train")
        training.seed = options.training.seed &+ UInt64(round)
        training.resume = true
        if FileManager.default.fileExists(atPath: training.adapterDirectory) {
            report(.stage(round: round, name: "train", skipped: true))
        } else {
            report(.stage(round: round, name: "train", skipped: false))
            try DPOTrainer(options: training).train { report(.training(round: round, $0)) }
        }
        var evaluation = training
        evaluation.initAdapter = training.adapterDirectory
        evaluation.evalFraction = 0
        evaluation.evalDataPath = nil
        let evaluator = try DPOTrainer(options: evaluation)
        let metrics = try evaluator.evaluateDataset()

        // 4. Merge the adapter into the policy: the next round's policy and reference.
        let merged = path("model.onnx")
        if FileManager.default.fileExists(atPath: merged) {
            report(.stage(round: round, name: "merge", skipped: true))
        } else {
            report(.stage(round: round, name: "merge", skipped: false))
            let (base, adapter) = try Model.load(path: policy, adapterPath: training.adapterDirectory)
            _ = try ONNXExport.write(model: base, adapter: adapter, form: .merged, to: merged,
                                     adapterSource: training.adapterDirectory)
        }

        let steps = (try? RunMetrics.load(path: (training.outputDirectory as NSString).appendingPathComponent("metrics.jsonl")))?
            .lastTrain["step"].map { Int($0) } ?? 0
        let summary = RoundSummary(round: round, policy: policy, mergedModel: merged, samples: samples, judge: judged,
                                   rewardAccuracy: metrics.rewardsAccuracies, rewardMargin: metrics.rewardsMargins,
                                   loss: metrics.loss, trainingSteps: steps)
        try write(summary, to: summaryPath)
        return summary
    }

    private func read<T: Decodable>(_ type: T.Type, _ path: String) -> T? {
        FileManager.default.contents(atPath: path).flatMap { try? JSONDecoder().decode(T.self, from: $0) }
    }

    private func write<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do { try AtomicFile.write(try encoder.encode(value), to: path) } catch let error as GraphError {
            throw TrainingError.cannotWrite(path: path, reason: "\(error)")
        }
    }
}
