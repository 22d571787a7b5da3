import Tokenizers

/// One unpaired record (TRL's unpaired preference format, the data of `KTOTrainer`): a prompt, a completion and
/// whether the completion is desirable, with its 1-based line number.
public struct UnpairedExample: Sendable, Equatable {
    public var prompt: String
    public var completion: String
    /// `label`: true for a desirable completion, false for an undesirable one.
    public var isDesirable: Bool
    public var line: Int

    public init(prompt: String, completion: String, isDesirable: Bool, line: Int) {
        self.prompt = prompt
        self.completion = completion
        self.isDesirable = isDesirable
        self.line = line
    }
}

/// An unpaired dataset read from JSONL: one `{"prompt": String, "completion": String, "label": Bool}` object per line
/// (blank lines skipped), or preference pairs unpaired as TRL's `KTOTrainer` unpairs them. Conversational records are
/// refused, as for preference data.
public struct UnpairedDataset: Sendable {
    public let path: String
    public let examples: [UnpairedExample]

    /// The key names of the format, as written in the files, mapped to Swift names only here.
    private static let keys = (prompt: "prompt", completion: "completion", label: "label")

    public init(path: String, examples: [UnpairedExample]) {
        self.path = path
        self.examples = examples
    }

    /// Reads `path`. A line that is not a JSON object, a missing key, a prompt or completion that is not a string, a
    /// label that is not a JSON boolean (`true`/`false`; not 1, "yes" or null) and a file without records are errors
    /// naming the file (and the line). A file whose first record is a preference pair (`chosen`, `rejected` or their
    /// ids, no `completion`) is read as preference data (`PreferenceDataset.load`) and unpaired (`init(unpairing:)`).
    public static func load(path: String) throws(TrainingError) -> UnpairedDataset {
        let objects = try jsonlObjects(path: path)
        let pairKeys = ["chosen", "rejected", "chosen_ids", "rejected_ids", "chosen_input_ids", "rejected_input_ids"]
        if let first = objects.first?.object, first[keys.completion] == nil, pairKeys.contains(where: { first[$0] != nil }) {
            return try UnpairedDataset(unpairing: PreferenceDataset.load(path: path))
        }
        var examples: [UnpairedExample] = []
        for (line, object) in objects {
            let prompt = try jsonlString(object, key: keys.prompt, path: path, line: line)
            let completion = try jsonlString(object, key: keys.completion, path: path, line: line)
            guard let label = object[keys.label] else { throw .missingDataKey(path: path, line: line, key: keys.label) }
            guard case .bool(let isDesirable) = label else {
                throw .invalidDataRecord(
                    path: path, line: line,
                    reason: "'\(keys.label)' must be a boolean (true: a desirable completion, false: an undesirable "
                        + "one), found \(label.kindName)")
            }
            examples.append(UnpairedExample(prompt: prompt, completion: completion, isDesirable: isDesirable, line: line))
        }
        guard !examples.isEmpty else { throw .emptyDataset(path: path, reason: "the file has no records") }
        return UnpairedDataset(path: path, examples: examples)
    }

    /// How many pairs TRL unpairs at a time: `datasets`' default batch for `Dataset.map(batched=True)`.
    static let unpairingChunk = 1000

    /// Preference pairs as unpaired rows, in the order of TRL's `unpair_preference_dataset`: each chunk of 1000 pairs
    /// gives its chosen completions (desirable), then its rejected completions (undesirable), each after its pair's
    /// prompt (an implicit prompt split off first, as TRL's `extract_prompt` does). Pre-tokenised and conversational
    /// pairs are refused.
    public init(unpairing dataset: PreferenceDataset) throws(TrainingError) {
        var split: [(prompt: String, chosen: String, rejected: String, line: Int)] = []
        for pair in dataset.pairs {
            switch pair.content {
            case .explicit(let prompt, let chosen, let rejected):
                split.append((prompt, chosen, rejected, pair.line))
            case .implicit(let chosen, let rejected):
                guard let parts = extractPrompt(chosen: chosen, rejected: rejected) else {
                    throw .invalidDataRecord(
                        path: dataset.path, line: pair.line,
                        reason: "an implicit-prompt record needs non-empty 'chosen' and 'rejected' to find their shared prompt")
                }
                split.append((parts.prompt, parts.chosen, parts.rejected, pair.line))
            case .pretokenized:
                throw .invalidDataRecord(
                    path: dataset.path, line: pair.line,
                    reason: "pre-tokenised pairs cannot be unpaired for KTO: give prompt/completion/label records")
            case .conversational:
                throw .invalidDataRecord(
                    path: dataset.path, line: pair.line,
                    reason: "conversational (message list) records are not supported with KTO yet: apply the chat "
                        + "template and write the prompt and completion as plain strings")
            }
        }
        var examples: [UnpairedExample] = []
        for start in stride(from: 0, to: split.count, by: Self.unpairingChunk) {
            let chunk = split[start..<min(start + Self.unpairingChunk, split.count)]
            examples += chunk.map { UnpairedExample(prompt: $0.prompt, completion: $0.chosen, isDesirable: true, line: $0.line) }
            examples += chunk.map { UnpairedExample(prompt: $0.prompt, completion: $0.rejected, isDesirable: false, line: $0.line) }
        }
        self.init(path: dataset.path, examples: examples)
    }

    /// The training and eval datasets of `PreferenceDataOrder.split` (records keep their file order and lines).
    public func split(evalFraction: Double, seed: UInt64) throws(TrainingError) -> (train: UnpairedDataset, eval: UnpairedDataset) {
        let (train, eval) = try PreferenceDataOrder.split(count: examples.count, evalFraction: evalFraction, seed: seed)
        return (UnpairedDataset(path: path, examples: train.map { examples[$0] }),
                UnpairedDataset(path: path, examples: eval.map { examples[$0] }))
    }
}

extension UnpairedExample {
    /// `(prompt_ids, completion_ids)` as TRL 1.16's `KTOTrainer._prepare_dataset` makes them for plain strings: the
    /// EOS token's text appended to the completion unless it already ends with it; the prompt and prompt + completion
    /// each tokenised as one string with special tokens (one BOS, at the start); the completion begins where the two
    /// id sequences first differ (`common_prefix_length`).
    public func tokenized(with tokenizer: Tokenizer) throws(TrainingError) -> (promptIDs: [Int], completionIDs: [Int]) {
        guard let eos = tokenizer.eosToken else {
            throw .invalidDataOption(
                option: "tokenizer '\(tokenizer.path)'",
                reason: "no EOS token (set eos_token in tokenizer_config.json): TRL appends it to every completion")
        }
        let completionWithEOS = completion.hasScalarSuffix(eos) ? completion : completion + eos
        let promptIDs = tokenizer.encode(prompt)
        let fullIDs = tokenizer.encode(prompt + completionWithEOS)
        let promptLength = commonPrefixLength(promptIDs, fullIDs)
        return (Array(promptIDs[..<promptLength]), Array(fullIDs[promptLength...]))
    }
}

/// Tokenised unpaired rows laid out for the trainer's batches: row `i` is a `TokenizedPair` whose `chosenIDs` are its
/// completion and whose `rejectedIDs` are its KL completion (another row's completion after the same prompt), so a
/// collated `PreferenceBatch` holds the completion rows first and the KL rows after them, the layout
/// `KTOObjective` reads.
public struct UnpairedRows: Sendable, Equatable {
    public var rows: [TokenizedPair]
    /// Whether each row's completion is desirable.
    public var labels: [Bool]
    /// Lines of the records whose prompt alone fills `maxLength`, dropped as TRL drops them.
    public var droppedLines: [Int]

    public init(rows: [TokenizedPair], labels: [Bool], droppedLines: [Int] = []) {
        self.rows = rows
        self.labels = labels
        self.droppedLines = droppedLines
    }
}

extension UnpairedDataset {
    /// Every record tokenised (`UnpairedExample.tokenized(with:)`); with a `maxLength`, the records whose prompt has
    /// `maxLength` or more tokens dropped (TRL's KTO filter, whatever the truncation); then, when `klBlock` is set, each
    /// row's KL completion: TRL rotates the completions by one within each block of `klBlock` consecutive rows
    /// (its `per_device_train_batch_size`), `(x₁, y₁) … (xₙ, yₙ) → (x₁, yₙ), (x₂, y₁) … (xₙ, yₙ₋₁)`. Without
    /// `klBlock` (a loss with no KL term) the KL completions are empty. Fails with `TrainingError.emptyDataset` when
    /// every record is dropped.
    public func tokenized(with tokenizer: Tokenizer, options: PreferenceDataOptions = PreferenceDataOptions(),
                          klBlock: Int?) throws(TrainingError) -> UnpairedRows {
        try options.validate()
        var prompts: [[Int]] = [], completions: [[Int]] = [], labels: [Bool] = [], lines: [Int] = [], dropped: [Int] = []
        for example in examples {
            let (promptIDs, completionIDs) = try example.tokenized(with: tokenizer)
            if let maxLength = options.maxLength, promptIDs.count >= maxLength {
                dropped.append(example.line)
                continue
            }
            prompts.append(promptIDs)
            completions.append(completionIDs)
            labels.append(example.isDesirable)
            lines.append(example.line)
        }
        guard !prompts.isEmpty else {
            throw .emptyDataset(
                path: path,
                reason: "every prompt has at least --max-length \(options.maxLength ?? 0) tokens, so truncation leaves "
                    + "no completion token")
        }
        var klCompletions = [[Int]](repeating: [], count: completions.count)
        if let klBlock {
            for start in stride(from: 0, to: completions.count, by: klBlock) {
                let end = min(start + klBlock, completions.count)
                for index in start..<end { klCompletions[index] = completions[index == start ? end - 1 : index - 1] }
            }
        }
        let rows = prompts.indices.map {
            TokenizedPair(promptIDs: prompts[$0], chosenIDs: completions[$0], rejectedIDs: klCompletions[$0], line: lines[$0])
        }
        return UnpairedRows(rows: rows, labels: labels, droppedLines: dropped)
    }
}
