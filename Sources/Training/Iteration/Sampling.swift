import Foundation
import Tokenizers

/// `onnx-dpo sample`: K completions per prompt from a model (an adapter applied unmerged, or not), the first step of
/// the iterative loop.
public struct SamplingRun: Sendable {
    public var modelPath: String
    public var adapterPath: String?
    public var tokenizerPath: String
    /// JSONL with a `prompt` string per line (`PromptRecord`; a preference data file serves).
    public var promptsPath: String
    /// Where the samples go (JSONL of `SampledPrompt`).
    public var outputPath: String
    /// Completions per prompt (K).
    public var completionsPerPrompt: Int = 4
    /// Sampling settings; `numReturnSequences` is set from `completionsPerPrompt`, and each prompt draws from its
    /// own seed (this seed and the prompt's line), so its completions do not depend on the other prompts or on a
    /// resume.
    public var generation = GenerationOptions(maxNewTokens: 64, sampling: .sampling())
    /// Continue a `.partial` output left by an interrupted run instead of starting over.
    public var resume = false
    /// Render text prompts as one user message through the chat template (message-list prompts always are), and keep
    /// them as messages in the samples; `chatTemplatePath` replaces the tokenizer_config.json's template.
    public var chat = false
    public var chatTemplatePath: String?

    public init(modelPath: String, adapterPath: String? = nil, tokenizerPath: String, promptsPath: String, outputPath: String) {
        self.modelPath = modelPath
        self.adapterPath = adapterPath
        self.tokenizerPath = tokenizerPath
        self.promptsPath = promptsPath
        self.outputPath = outputPath
    }
}

/// What a sampling run wrote.
public struct SamplingSummary: Codable, Sendable, Equatable {
    public var prompts: Int
    public var completions: Int
    /// Prompts taken from an interrupted run's `.partial` file instead of sampled again.
    public var resumedPrompts: Int
    /// Completions that stopped at `maxNewTokens` rather than at EOS or a stop string.
    public var truncatedCompletions: Int

    enum CodingKeys: String, CodingKey {
        case prompts, completions
        case resumedPrompts = "resumed_prompts", truncatedCompletions = "truncated_completions"
    }
}

public enum Sampling {
    /// Samples every prompt of `run.promptsPath`, writing one `SampledPrompt` line per prompt to
    /// `<output>.partial` as it finishes and renaming it to the output at the end (`PartialJSONLines`).
    /// `progress(done, total)` follows the prompts.
    @discardableResult
    public static func run(_ run: SamplingRun, progress: (Int, Int) -> Void = { _, _ in }) throws -> SamplingSummary {
        guard run.completionsPerPrompt >= 1 else {
            throw TrainingError.invalidOption(option: "completionsPerPrompt", reason: "must be at least 1, got \(run.completionsPerPrompt)")
        }
        let prompts = try JSONLines.read(PromptRecord.self, from: run.promptsPath)
        if let empty = prompts.first(where: { $0.value.prompt.isEmpty }) {
            throw TrainingError.invalidDataRecord(path: run.promptsPath, line: empty.line, reason: "the prompt is empty")
        }
        let tokenizer = try Tokenizer(path: run.tokenizerPath)
        let prompter = try PromptTokenizer(tokenizer: tokenizer, tokenizerPath: run.tokenizerPath, chat: run.chat,
                                           templatePath: run.chatTemplatePath, prompts: prompts.map(\.value.prompt.generatorPrompt))
        let generator = try Generator.open(modelPath: run.modelPath, adapterPath: run.adapterPath)
        // What was rendered is what the samples keep: a chat's messages.
        func kept(_ prompt: LoopPrompt) -> LoopPrompt { prompter.messages(prompt.generatorPrompt).map(LoopPrompt.messages) ?? prompt }
        let output = try PartialJSONLines(path: run.outputPath, resume: run.resume)
        // A resumed file's lines are the first prompts', in order; anything else is another run's and is refused.
        let done = try output.resumedLines.enumerated().map { index, line in
            guard index < prompts.count, let sample = try? JSONDecoder().decode(SampledPrompt.self, from: line),
                  sample.line == prompts[index].line, sample.prompt == kept(prompts[index].value.prompt) else {
                throw TrainingError.invalidDataRecord(path: output.partialPath, line: index + 1, reason:
                    "is not the sample of prompt \(index + 1) of \(run.promptsPath): remove the file to start over")
            }
            return sample
        }
        var options = run.generation
        options.numReturnSequences = run.completionsPerPrompt
        var completions = done.reduce(0) { $0 + $1.completions.count }, truncated = 0
        for (index, (line, record)) in prompts.enumerated().dropFirst(done.count) {
            let prompt = record.prompt.generatorPrompt
            let ids: [Int]
            do {
                ids = try prompter.ids(prompt, index: index)
            } catch let error as TrainingError {
                throw TrainingError.invalidDataRecord(path: run.promptsPath, line: line, reason: "\(error)")
            }
            options.seed = run.generation.seed &+ UInt64(line) &* 0xD1B5_4A32_D192_ED03
            let sequences: [GeneratedSequence]
            do {
                sequences = try generator.generate([ids], options: options, tokenizer: tokenizer)
            } catch let error as TrainingError {
                throw TrainingError.invalidDataRecord(path: run.promptsPath, line: line, reason: "\(error)")
            }
            let texts = sequences.map { sequence in
                // The EOS that ended a row is not text: training appends its own.
                tokenizer.decode(sequence.finishReason == .eos ? Array(sequence.outputIDs.dropLast()) : sequence.outputIDs,
                                 skipSpecialTokens: true)
            }
            truncated += sequences.filter { $0.finishReason == .maxNewTokens || $0.finishReason == .contextLength }.count
            completions += texts.count
            try output.append(SampledPrompt(line: line, prompt: kept(record.prompt), completions: texts))
            progress(index + 1, prompts.count)
        }
        try output.finish()
        return SamplingSummary(prompts: prompts.count, completions: completions, resumedPrompts: done.count,
                               truncatedCompletions: truncated)
    }
}
