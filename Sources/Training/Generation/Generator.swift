import Foundation
import Interpreter
import ONNXGraph
import Tokenizers

// Letters: B rows (prompts × return sequences), T the longest row, V the vocabulary, P the cached positions.

/// What a generation run is asked for.
public struct GenerationOptions: Sendable {
    /// New tokens per row at most (≥ 1).
    public var maxNewTokens: Int
    /// Greedy or sampling, and the logits processors.
    public var sampling: SamplingOptions
    /// Seed of the draws; row r draws from its own `SeededGenerator`, seeded from `seed` and r, so a row's tokens do
    /// not depend on which rows ran beside it.
    public var seed: UInt64
    /// A row stops once its generated text contains one of these (the token that completed it is kept, as
    /// transformers' `StopStringCriteria`). Needs a tokenizer.
    public var stopStrings: [String]
    /// Tokens that end a row (kept in its output); nil: the model folder's (`GenerationDefaults`).
    public var eosTokenIDs: Set<Int>?
    /// Rows per prompt (transformers' `num_return_sequences`: prompt i gives rows i·K ..< (i+1)·K).
    public var numReturnSequences: Int
    /// Feed the KV cache when the graph has one; false recomputes the whole prefix every step (the check of the
    /// cache path, and the only path for graphs without cache inputs).
    public var useKVCache: Bool

    public init(maxNewTokens: Int = 32, sampling: SamplingOptions = .greedy(), seed: UInt64 = 0, stopStrings: [String] = [],
                eosTokenIDs: Set<Int>? = nil, numReturnSequences: Int = 1, useKVCache: Bool = true) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.seed = seed
        self.stopStrings = stopStrings
        self.eosTokenIDs = eosTokenIDs
        self.numReturnSequences = numReturnSequences
        self.useKVCache = useKVCache
    }
}

/// Why a row stopped.
public enum FinishReason: String, Sendable, Codable {
    case eos
    case stopString = "stop_string"
    case maxNewTokens = "max_new_tokens"
    /// The row reached the model's context length.
    case contextLength = "context_length"
}

/// One generated row.
public struct GeneratedSequence: Sendable, Equatable {
    /// Which prompt it continues (0-based, in the order given).
    public var promptIndex: Int
    /// The new tokens only (EOS included when it ended the row).
    public var outputIDs: [Int]
    /// Per new token, its log-probability under the model's own distribution (log-softmax of the raw logits,
    /// before any processor).
    public var tokenLogProbs: [Float]
    public var finishReason: FinishReason
}

/// How a graph is decoded.
public enum DecodeStrategy: String, Sendable, Codable {
    /// KV-cache inputs (`past_key_values.N.*`) and matching `present.N.*` outputs: the prompt once, then one token
    /// per step with the previous step's presents as the past.
    case kvCache = "kv_cache"
    /// No usable cache: the whole prefix is recomputed every step (correct for every causal graph, slower).
    case recompute
}

/// A prompt before tokenisation: text (tokenised with the tokenizer's special tokens, as transformers' `__call__`)
/// or ids as given. A chat template renders messages to `.text` before generation.
public enum Prompt: Sendable, Equatable {
    case text(String)
    case ids([Int])
    /// A chat: `{"role", "content"}` messages, rendered by the tokenizer's chat template with the generation prompt
    /// (`GenerateCommand.run`) before it becomes ids.
    case messages([JSONValue])

    /// The prompt's ids; throws when it has none (`index` names it in the error).
    public func tokenIDs(tokenizer: Tokenizer?, index: Int) throws -> [Int] {
        switch self {
        case .ids(let ids):
            guard !ids.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) is empty") }
            return ids
        case .text(let text):
            guard !text.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) is empty") }
            guard let tokenizer else {
                throw TrainingError.invalidOption(option: "tokenizer", reason: "is needed to tokenise text prompts")
            }
            let ids = tokenizer.encode(text)
            guard !ids.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) gives no tokens") }
            return ids
        case .messages:
            throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) is a chat: render it with a chat template first")
        }
    }
}

/// Produces tokens from a causal language model graph (one session, reused for every step and call).
///
/// KV cache (`DecodeStrategy.kvCache`): the prompts run once, right-padded to the longest, then each step feeds only
/// the new token per row with the presents as the past. Rows of different lengths share a batch:
/// - GroupQueryAttention graphs (onnxruntime-genai's builder) read the mask only as each row's length
///   (`seqlens_k = ReduceSum(mask) − 1`) and its width (`total_sequence_length`), and the op writes row b's new
///   key/value at its own length and rotates it at that position. So the mask stays right-padded: row b's first
///   `length_b + 1` cells are ones, and a shorter row's cache keeps its padding after its real tokens.
/// - Other graphs (optimum's with-past layout) take a general mask: the step's column is appended (the prompt's
///   padding stays a hole) and `position_ids` is each row's own count of real tokens.
/// When a batch would grow past the model's context the rows run one at a time instead (each row's width is then
/// its own length). Without a cache every step recomputes the right-padded rows: real tokens never see the padding
/// after them in a causal graph, so each row equals its unpadded run.
public final class Generator: @unchecked Sendable {
    public let session: Session
    /// The graph output holding the logits `[B, T, V]`.
    public let logitsOutput: String
    /// How the graph is decoded when the cache is wanted.
    public let strategy: DecodeStrategy
    /// Why `strategy` was chosen, in words (for `inspect`).
    public let strategyReason: String
    /// The model folder's generation settings (EOS, context length).
    public let defaults: GenerationDefaults

    private let cache: KVCacheInputs
    /// Past input name → present output name.
    private let presents: [(past: String, present: String)]
    private let usesGroupQueryAttention: Bool
    private let takesPositions: Bool
    private let takesMask: Bool

    /// A generator over `session`; `logitsOutput` names the logits output when the graph's structure does not
    /// (`LogitsOutput.find`).
    public init(session: Session, logitsOutput: String? = nil) throws {
        self.session = session
        let model = session.model
        self.logitsOutput = try LogitsOutput.find(in: model, named: logitsOutput)
        defaults = GenerationDefaults(model: model)
        cache = try KVCacheInputs(model: model)
        let plan = Self.plan(model: model, cache: cache)
        presents = plan.presents
        strategy = plan.strategy
        strategyReason = plan.reason
        usesGroupQueryAttention = model.graph.nodes.contains { $0.opType == "GroupQueryAttention" }
        takesPositions = session.inputs.contains { $0.name == "position_ids" }
        takesMask = session.inputs.contains { $0.name == "attention_mask" }
    }

    /// A generator on the model at `modelPath` with the adapter folder at `adapterPath` (PEFT or MLX) applied
    /// unmerged (`Session.open(modelPath:adapterPath:)`).
    /// The session precomputes its constant nodes (`Session.foldConstants`) and packs its weights
    /// (`Session.packWeights`): it only runs inference.
    public static func open(modelPath: String, adapterPath: String? = nil, logitsOutput: String? = nil) throws -> Generator {
        let session = try Session.open(modelPath: modelPath, adapterPath: adapterPath)
        try session.foldConstants()
        try session.packWeights()
        return try Generator(session: session, logitsOutput: logitsOutput)
    }

    /// The strategy for `model`: the cache when every cache input has its present output.
    public static func plan(model: Model, cache: KVCacheInputs) -> (strategy: DecodeStrategy, reason: String,
                                                                     presents: [(past: String, present: String)]) {
        guard !cache.inputs.isEmpty else {
            return (.recompute, "no KV-cache inputs: the whole prefix is recomputed each step", [])
        }
        let outputs = Set(model.graph.outputs.map(\.name))
        var pairs: [(String, String)] = []
        for input in cache.inputs {
            let present = input.name.replacingOccurrences(of: "past_key_values", with: "present")
            guard outputs.contains(present) else {
                return (.recompute, "cache input \(input.name) has no output \(present): the whole prefix is recomputed each step", [])
            }
            pairs.append((input.name, present))
        }
        let gqa = model.graph.nodes.contains { $0.opType == "GroupQueryAttention" }
        return (.kvCache, "\(cache.inputs.count) KV-cache inputs fed from present.* outputs, one new token per step"
                + (gqa ? " (GroupQueryAttention: rows right-padded, each at its own length)" : ""), pairs)
    }

    /// Generates for every prompt (ids), `options.numReturnSequences` rows each, in prompt order. `tokenizer`
    /// decodes for stop strings. `onToken(row, token)` is called as each token is chosen.
    public func generate(_ prompts: [[Int]], options: GenerationOptions, tokenizer: Tokenizer? = nil,
                         onToken: ((Int, Int) -> Void)? = nil) throws -> [GeneratedSequence] {
        try validate(prompts, options: options, tokenizer: tokenizer)
        let eos = options.eosTokenIDs ?? defaults.eosTokenIDs
        var rows: [Row] = []
        for (index, prompt) in prompts.enumerated() {
            for _ in 0..<options.numReturnSequences {
                let seed = options.seed &+ UInt64(rows.count) &* 0x9E37_79B9_7F4A_7C15
                rows.append(Row(index: rows.count, promptIndex: index, ids: prompt, promptLength: prompt.count,
                                generator: SeededGenerator(seed: seed)))
            }
        }
        let step = Stepper(generator: self, options: options, eos: eos, tokenizer: tokenizer, onToken: onToken)
        if options.useKVCache && strategy == .kvCache {
            let longest = rows.map(\.promptLength).max() ?? 0
            let fits = defaults.contextLength.map { longest + options.maxNewTokens <= $0 } ?? true
            let sameLength = Set(rows.map(\.promptLength)).count == 1
            if fits || sameLength {
                try decodeWithCache(&rows, step: step)
            } else {
                for index in rows.indices {
                    var one = [rows[index]]
                    try decodeWithCache(&one, step: step)
                    rows[index] = one[0]
                }
            }
        } else {
            try decodeRecomputing(&rows, step: step)
        }
        return rows.map { GeneratedSequence(promptIndex: $0.promptIndex, outputIDs: Array($0.ids[$0.promptLength...]),
                                            tokenLogProbs: $0.logProbs, finishReason: $0.finished ?? .maxNewTokens) }
    }

    /// Every prompt's tokens and the options, checked before anything runs.
    private func validate(_ prompts: [[Int]], options: GenerationOptions, tokenizer: Tokenizer?) throws {
        guard !prompts.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "no prompts were given") }
        guard options.maxNewTokens >= 1 else {
            throw TrainingError.invalidOption(option: "maxNewTokens", reason: "must be ≥ 1, got \(options.maxNewTokens)")
        }
        guard options.numReturnSequences >= 1 else {
            throw TrainingError.invalidOption(option: "numReturnSequences", reason: "must be ≥ 1, got \(options.numReturnSequences)")
        }
        try options.sampling.validate()
        if !options.stopStrings.isEmpty && tokenizer == nil {
            throw TrainingError.invalidOption(option: "stop", reason: "needs a tokenizer to decode the generated text")
        }
        if options.stopStrings.contains("") { throw TrainingError.invalidOption(option: "stop", reason: "an empty stop string") }
        let vocabulary = LogitsOutput.vocabularySize(of: logitsOutput, in: session.model)
        for (index, prompt) in prompts.enumerated() {
            guard !prompt.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) is empty") }
            if let vocabulary, let bad = prompt.first(where: { $0 < 0 || $0 >= vocabulary }) {
                throw TrainingError.invalidOption(option: "prompt", reason:
                    "#\(index + 1) has token id \(bad), outside the model's vocabulary [0, \(vocabulary))")
            }
            if let context = defaults.contextLength, prompt.count >= context {
                throw TrainingError.invalidOption(option: "prompt", reason:
                    "#\(index + 1) has \(prompt.count) tokens; the model's context is \(context) (\(defaults.contextSource)), "
                    + "which leaves no room for a new token")
            }
        }
    }

    // MARK: - The two decode paths

    /// Without the cache: every step runs the active rows' whole sequences, right-padded.
    private func decodeRecomputing(_ rows: inout [Row], step: Stepper) throws {
        while true {
            let active = rows.indices.filter { rows[$0].finished == nil }
            guard !active.isEmpty else { return }
            let sequences = active.map { rows[$0].ids }
            let width = sequences.map(\.count).max()!
            var feeds = paddedFeeds(sequences, width: width)
            feeds.merge(cache.emptyFeeds(batch: active.count)) { given, _ in given }
            let logits = try logitsTensor(try session.run(feeds, outputNames: [logitsOutput]), rows: active.count, width: width)
            for (position, index) in active.enumerated() {
                try step.advance(&rows[index], logits: logits, row: position, at: rows[index].ids.count - 1)
            }
        }
    }

    /// With the cache: the prompts once, then one token per row and step. Finished rows leave the batch.
    private func decodeWithCache(_ rows: inout [Row], step: Stepper) throws {
        var active = Array(rows.indices)
        let sequences = active.map { rows[$0].ids }
        let width = sequences.map(\.count).max()!
        var feeds = paddedFeeds(sequences, width: width)
        feeds.merge(cache.emptyFeeds(batch: active.count)) { given, _ in given }
        // Per active row: the mask so far (general graphs) and the tokens whose keys and values are cached.
        var masks: [[Int64]] = sequences.map { sequence in (0..<width).map { $0 < sequence.count ? 1 : 0 } }
        var cached = sequences.map(\.count)
        var outputs = try session.run(feeds, outputNames: [logitsOutput] + presents.map(\.present))
        var logits = try logitsTensor(outputs, rows: active.count, width: width)
        for (position, index) in active.enumerated() {
            try step.advance(&rows[index], logits: logits, row: position, at: cached[position] - 1)
        }
        while true {
            // Drop the rows that finished, from the batch and from every cache tensor.
            let keep = active.indices.filter { rows[active[$0]].finished == nil }
            guard !keep.isEmpty else { return }
            var past: [String: Tensor] = [:]
            for (pastName, presentName) in presents {
                guard let present = outputs[presentName] else {
                    throw InterpreterError.invalidInput(name: presentName, reason: "the session did not return this present output")
                }
                past[pastName] = keep.count == active.count ? present : try selectRows(present, keep)
            }
            active = keep.map { active[$0] }
            masks = keep.map { masks[$0] }
            cached = keep.map { cached[$0] }
            let pastWidth = past.values.first?.shape[2] ?? 0

            var feeds = past
            feeds["input_ids"] = Tensor(shape: [active.count, 1], int64s: active.map { Int64(rows[$0].ids.last!) })
            if usesGroupQueryAttention {
                // Right-padded: row b's cached tokens and the new one, then zeros, as wide as the past plus one.
                feeds["attention_mask"] = Tensor(shape: [active.count, pastWidth + 1], int64s: cached.flatMap { count in
                    (0...pastWidth).map { $0 <= count ? 1 : 0 }
                })
            } else {
                for index in masks.indices { masks[index].append(1) }
                if takesMask {
                    feeds["attention_mask"] = Tensor(shape: [active.count, masks[0].count], int64s: masks.flatMap { $0 })
                }
            }
            if takesPositions {
                feeds["position_ids"] = Tensor(shape: [active.count, 1], int64s: cached.map(Int64.init))
            }
            outputs = try session.run(feeds, outputNames: [logitsOutput] + presents.map(\.present))
            logits = try logitsTensor(outputs, rows: active.count, width: 1)
            for (position, index) in active.enumerated() {
                cached[position] += 1
                try step.advance(&rows[index], logits: logits, row: position, at: 0)
            }
        }
    }

    // MARK: - Feeds and outputs

    /// `input_ids`, `attention_mask` (and `position_ids` 0, 1, … where the graph takes them) for right-padded rows.
    private func paddedFeeds(_ sequences: [[Int]], width: Int) -> [String: Tensor] {
        let rows = sequences.count
        var feeds = ["input_ids": Tensor(shape: [rows, width], int64s: sequences.flatMap { sequence in
            (0..<width).map { $0 < sequence.count ? Int64(sequence[$0]) : 0 }
        })]
        if takesMask {
            feeds["attention_mask"] = Tensor(shape: [rows, width], int64s: sequences.flatMap { sequence in
                (0..<width).map { $0 < sequence.count ? 1 : 0 }
            })
        }
        if takesPositions {
            feeds["position_ids"] = Tensor(shape: [rows, width], int64s: (0..<(rows * width)).map { Int64($0 % width) })
        }
        return feeds
    }

    /// The logits output, checked to be float `[rows, width, V]`.
    private func logitsTensor(_ outputs: [String: Tensor], rows: Int, width: Int) throws -> Tensor {
        guard let logits = outputs[logitsOutput], case .float = logits.storage, logits.rank == 3,
              logits.shape[0] == rows, logits.shape[1] == width else {
            throw TrainingError.invalidModel(path: session.model.path, reason:
                "the logits output '\(logitsOutput)' is \(outputs[logitsOutput].map { "\($0.dataType)\($0.shape)" } ?? "missing"), "
                + "expected float [\(rows), \(width), vocabulary]")
        }
        return logits
    }

    /// The rows `keep` (dimension 0) of a float tensor.
    private func selectRows(_ tensor: Tensor, _ keep: [Int]) throws -> Tensor {
        guard case .float(let values) = tensor.storage, tensor.rank >= 1 else {
            throw InterpreterError.invalidInput(name: "present", reason: "a \(tensor.dataType) cache cannot be sliced; only float is supported")
        }
        let stride = tensor.count / max(tensor.shape[0], 1)
        var selected: [Float] = []
        selected.reserveCapacity(stride * keep.count)
        for row in keep { selected += values[(row * stride)..<((row + 1) * stride)] }
        return Tensor(shape: [keep.count] + tensor.shape.dropFirst(), floats: selected)
    }

    /// One row being generated.
    struct Row {
        let index: Int
        let promptIndex: Int
        var ids: [Int]
        let promptLength: Int
        var generator: SeededGenerator
        var logProbs: [Float] = []
        var finished: FinishReason?
    }

    /// Chooses a row's next token from its logits and decides whether the row is done.
    struct Stepper {
        let generator: Generator
        let options: GenerationOptions
        let eos: Set<Int>
        let tokenizer: Tokenizer?
        let onToken: ((Int, Int) -> Void)?

        func advance(_ row: inout Row, logits: Tensor, row position: Int, at offset: Int) throws {
            let vocabulary = logits.shape[2]
            let start = (position * logits.shape[1] + offset) * vocabulary
            let scores = Array(logits.floats[start..<(start + vocabulary)])
            let token = options.sampling.choose(scores, previous: row.ids, generator: &row.generator)
            row.ids.append(token)
            let top = scores.max() ?? 0
            let logSum = Double(top) + log(scores.reduce(0.0) { $0 + exp(Double($1 - top)) })
            row.logProbs.append(Float(Double(scores[token]) - logSum))
            onToken?(row.index, token)
            let generated = row.ids.count - row.promptLength
            if eos.contains(token) {
                row.finished = .eos
            } else if !options.stopStrings.isEmpty, let tokenizer,
                      case let text = tokenizer.decode(Array(row.ids[row.promptLength...])),
                      options.stopStrings.contains(where: { text.contains($0) }) {
                row.finished = .stopString
            } else if generated >= options.maxNewTokens {
                row.finished = .maxNewTokens
            } else if let context = generator.defaults.contextLength, row.ids.count >= context {
                row.finished = .contextLength
            }
        }
    }
}
