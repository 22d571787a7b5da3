import ArgumentParser
import Foundation
import Training

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sample K completions per prompt (the first step of iterative DPO); one JSON line per prompt.",
        discussion: """
            Writes {"line", "prompt", "completions"} per prompt of --prompts (JSONL with a "prompt" string; a \
            preference data file serves) to --output, which `onnx-dpo judge` reads. Each prompt draws from its own \
            seed (--seed and its line), so its completions do not depend on the other prompts. Lines go to \
            <output>.partial as prompts finish; --resume continues an interrupted run from there.
            """)

    @OptionGroup var policy: PolicyOptions
    @Option(help: "The prompts: JSONL with a \"prompt\" string per line.")
    var prompts: String
    @Option(name: .customLong("n"), help: "Completions per prompt.")
    var completions = 4
    @Option(help: "Where the samples go (JSONL).")
    var output: String
    @OptionGroup var decoding: DecodingFlags
    @Option(help: "Seed of the sampling draws.")
    var seed: UInt64 = 0
    @Flag(help: "Continue an interrupted run from <output>.partial.")
    var resume = false

    func run() throws {
        var run = SamplingRun(modelPath: policy.model, adapterPath: policy.adapter, tokenizerPath: policy.tokenizerPath,
                              promptsPath: prompts, outputPath: output)
        run.completionsPerPrompt = completions
        run.generation = try decoding.options(sampleByDefault: true, returnSequences: completions, seed: seed)
        run.resume = resume
        run.chat = policy.chat
        run.chatTemplatePath = policy.chatTemplate
        let progress = ProgressPrinter(total: 0)
        let summary = try Sampling.run(run) { done, total in progress.emit("sampled \(done)/\(total) prompts", final: done == total) }
        print("\(summary.completions) completions of \(summary.prompts) prompts written to \(output)"
              + (summary.resumedPrompts > 0 ? " (\(summary.resumedPrompts) prompts from the interrupted run)" : "")
              + (summary.truncatedCompletions > 0 ? "; \(summary.truncatedCompletions) stopped at --max-new-tokens" : ""))
    }
}

struct Iterate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Iterative DPO: sample, judge, train and merge, round after round; resumable.",
        discussion: """
            Each round samples --n completions per prompt from the policy, judges them into preference pairs (--by), \
            trains a fresh adapter on them with the policy as the reference, and merges it: the merged model is the \
            next round's policy and reference. Round N lives in <output-dir>/round-N (samples.jsonl, pairs.jsonl, \
            train/, model.onnx, round.json); a stage whose output exists is not run again, so the same command \
            resumes a killed loop, and with a larger --rounds continues a finished one.
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "The prompts sampled every round: JSONL with a \"prompt\" string per line.")
    var prompts: String
    @Option(help: "Rounds of sample, judge, train, merge.")
    var rounds = 2
    @Option(help: "Where the rounds go.")
    var outputDir: String
    @Option(name: .customLong("n"), help: "Completions per prompt.")
    var completions = 4
    @Flag(help: "Render text prompts as one user message through the chat template (--chat-template, or the tokenizer's); message-list prompts always are, and their pairs train as conversational data.")
    var chat = false

    @OptionGroup var decoding: DecodingFlags
    @OptionGroup var judging: JudgeOptions
    @OptionGroup var objective: ObjectiveOptions
    @OptionGroup var training: TrainingFlags

    func run() throws {
        var options = IterationOptions(modelPath: model.model, tokenizerPath: model.tokenizer, promptsPath: prompts,
                                       outputDirectory: outputDir, rounds: rounds, judge: judging.specification)
        options.completionsPerPrompt = completions
        options.chat = chat
        options.generation = try decoding.options(sampleByDefault: true, returnSequences: completions, seed: objective.seed)
        options.training = objective.trainingOptions(model: model, dataPath: "", outputDirectory: "")
        training.apply(to: &options.training)
        let progress = ProgressPrinter(total: 0)
        let summaries = try IterativeDPO(options: options).run { event in
            switch event {
            case .stage(let round, let name, let skipped):
                if skipped { progress.emit("round \(round): \(name) already done", final: true) }
                else { progress.emit("round \(round): \(name)", final: true) }
            case .sampling(_, let done, let total):
                progress.emit("  sampled \(done)/\(total) prompts", final: done == total)
            case .training(_, let event):
                if case .step(let metrics) = event {
                    progress.emit(String(format: "  step %d  loss %.4f  reward acc %.2f", metrics.step, metrics.objective.loss,
                                         metrics.objective.rewardsAccuracies), final: false)
                }
            case .roundFinished(let summary):
                progress.emit(String(format: "round %d: %d pairs, mean %@ %.4f, reward accuracy %.2f", summary.round,
                                     summary.judge.pairs, summary.judge.scoreName, summary.judge.meanScore, summary.rewardAccuracy),
                              final: true)
            }
        }
        progress.finish()
        print(Self.table(summaries))
        print("summary: \((outputDir as NSString).appendingPathComponent("summary.json")); final model: \(summaries.last?.mergedModel ?? "")")
    }

    /// One row per round.
    static func table(_ summaries: [RoundSummary]) -> String {
        let header = ["round", "prompts", "completions", "pairs", "mean score", "reward acc", "margin", "loss"]
        let rows = summaries.map { summary in
            ["\(summary.round)", "\(summary.samples.prompts)", "\(summary.samples.completions)", "\(summary.judge.pairs)",
             String(format: "%.4f", summary.judge.meanScore), String(format: "%.2f", summary.rewardAccuracy),
             String(format: "%.4f", summary.rewardMargin), String(format: "%.4f", summary.loss)]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n")
    }
}

/// A file beside a model file.
func besideModel(_ model: String, _ name: String) -> String {
    ((model as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name)
}
