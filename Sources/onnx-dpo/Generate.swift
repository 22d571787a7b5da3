import ArgumentParser
import Foundation
import Training

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a model (KV cache when the graph has one), optionally with an adapter applied unmerged.")

    @OptionGroup var policy: PolicyOptions

    @Option(help: "A prompt (text, tokenised with the tokenizer's special tokens).")
    var prompt: String?

    @Option(help: "A JSONL file of prompts: {\"prompt\": TEXT} or {\"prompt_ids\": [IDS]} per line.")
    var promptFile: String?

    @Option(help: "A prompt as comma-separated token ids (1,17,42).")
    var promptIds: String?

    @OptionGroup var decoding: DecodingFlags

    @Option(help: "Seed of the sampling draws.")
    var seed: UInt64 = 0

    @Option(help: "Sequences per prompt.")
    var numReturnSequences = 1

    @Flag(help: "Print {\"output_ids\": [[...]], \"text\": [...]} instead of streaming text.")
    var json = false

    @Option(help: "Also write one JSON line per sequence to this file.")
    var output: String?

    func run() throws {
        let given = [prompt != nil, promptFile != nil, promptIds != nil].filter { $0 }.count
        guard given == 1 else {
            throw ValidationError("give exactly one of --prompt, --prompt-file, --prompt-ids")
        }
        var prompts: [Prompt] = []
        if let prompt { prompts = [.text(prompt)] }
        if let promptFile { prompts = try GenerateParameters.prompts(fromFile: promptFile) }
        if let promptIds {
            let ids = promptIds.split(separator: ",", omittingEmptySubsequences: false)
                .map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !promptIds.isEmpty, ids.allSatisfy({ $0 != nil }) else {
                throw ValidationError("--prompt-ids '\(promptIds)' is not a comma-separated list of token ids")
            }
            prompts = [.ids(ids.map { $0! })]
        }
        let options = try decoding.options(sampleByDefault: false, returnSequences: numReturnSequences, seed: seed)
        var parameters = GenerateParameters(modelPath: policy.model, adapterPath: policy.adapter, tokenizerPath: policy.tokenizer,
                                            prompts: prompts, options: options, outputPath: output)
        parameters.chat = policy.chat
        parameters.chatTemplatePath = policy.chatTemplate
        var streamed = false
        let result = try GenerateCommand.run(parameters, stream: json ? nil : { text in
            streamed = true
            FileHandle.standardOutput.write(Data(text.utf8))
        })
        if json {
            print(try jsonText(result))
        } else if streamed {
            print()
        } else {
            for (index, text) in result.text.enumerated() {
                print("[\(index)] \(text)")
            }
        }
    }
}

/// The model that generates, its adapter and tokenizer, and whether prompts are chats: the flags `generate` and
/// `sample` share.
struct PolicyOptions: ParsableArguments {
    @Option(help: "The .onnx model.")
    var model: String

    @Option(help: "An adapter folder (PEFT or MLX) to apply unmerged.")
    var adapter: String?

    @Option(help: "tokenizer.json (default: the one beside the model).")
    var tokenizer: String?

    @Flag(help: "Render text prompts through the tokenizer's chat template as one user message, with the generation prompt (prompt-file rows may also hold message lists, which always are).")
    var chat = false

    @Option(help: "A Jinja chat template replacing the tokenizer_config.json's chat_template.")
    var chatTemplate: String?

    /// The tokenizer.json to read.
    var tokenizerPath: String { tokenizer ?? besideModel(model, "tokenizer.json") }
}

/// How tokens are chosen and when a sequence stops: the flags of `generate`, `sample` and `iterate`.
struct DecodingFlags: ParsableArguments {
    @Option(help: "New tokens per sequence at most.")
    var maxNewTokens = 32

    @Flag(help: "Greedy decoding (generate's default unless a sampling flag is given).")
    var greedy = false

    @Option(help: "Sample with this temperature.")
    var temperature: Float?

    @Option(help: "Sample from the k most likely tokens (transformers' default when sampling: 50; 0 = all).")
    var topK: Int?

    @Option(help: "Sample from the smallest set of tokens whose probability exceeds p.")
    var topP: Float?

    @Option(help: "Sample only tokens at least this fraction as likely as the most likely one.")
    var minP: Float?

    @Option(help: "Penalise tokens already in the sequence (1 = off), as transformers' repetition_penalty.")
    var repetitionPenalty: Float = 1

    @Option(parsing: .singleValue, help: "Stop a sequence once its text contains this string (repeatable).")
    var stop: [String] = []

    @Flag(help: "Recompute the whole prefix each step instead of feeding the KV cache.")
    var noCache = false

    /// The library's options: sampling when a sampling flag is given or `sampleByDefault` (then transformers'
    /// defaults: temperature 1, top-k 50), greedy otherwise.
    func options(sampleByDefault: Bool, returnSequences: Int, seed: UInt64) throws -> GenerationOptions {
        let sampling = [temperature != nil, topK != nil, topP != nil, minP != nil].contains(true)
        if greedy && sampling { throw ValidationError("--greedy cannot be combined with --temperature, --top-k, --top-p or --min-p") }
        return GenerationOptions(
            maxNewTokens: maxNewTokens,
            sampling: sampling || (sampleByDefault && !greedy)
                ? .sampling(temperature: temperature ?? 1, topK: topK ?? 50, topP: topP ?? 1, minP: minP,
                            repetitionPenalty: repetitionPenalty)
                : .greedy(repetitionPenalty: repetitionPenalty),
            seed: seed, stopStrings: stop, numReturnSequences: returnSequences, useKVCache: !noCache)
    }
}

extension Bench {
    struct GenerateTokens: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate",
            abstract: "Time generation on synthetic prompts: prompt tokens/s and decode tokens/s per batch size.")

        @Option(help: "The .onnx model.")
        var model: String
        @Option(help: "Batch sizes, comma-separated.")
        var batch = CommaList<Int>([1, 4])
        @Option(help: "Tokens per prompt.")
        var promptTokens = 128
        @Option(help: "New tokens per sequence.")
        var newTokens = 32
        @Flag(help: "Recompute the whole prefix each step instead of feeding the KV cache.")
        var noCache = false
        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let result = try GenerationBenchmark.run(modelPath: model, batches: batch.values, promptTokens: promptTokens,
                                                     newTokens: newTokens, useKVCache: !noCache)
            if json { print(try jsonText(result)); return }
            print("\(result.model) (\(result.strategy.rawValue), load \(String(format: "%.2f", result.loadSeconds)) s, peak memory "
                  + String(format: "%.1f MiB)", Double(result.peakMemoryBytes) / 1_048_576))
            for row in result.measurements {
                print(String(format: "batch %d: prompt %.1f tokens/s (%d tokens, %.3f s)  decode %.1f tokens/s (%d new, %.3f s)",
                             row.batch, row.promptTokensPerSecond, row.batch * row.promptTokens, row.promptSeconds,
                             row.decodeTokensPerSecond, row.newTokens, row.decodeSeconds))
            }
        }
    }
}
