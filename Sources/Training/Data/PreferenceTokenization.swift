import Tokenizers
/// How a sequence longer than `maxLength` is cut (TRL's `truncation_mode`).
public enum TruncationMode: String, Sendable, CaseIterable {
    /// Keep the first `maxLength` tokens (TRL's default).
    case keepStart = "keep_start"
    /// Keep the last `maxLength` tokens (deprecated in TRL 1.x, kept for old configurations).
    case keepEnd = "keep_end"
}

/// Options of the data pipeline, TRL's `DPOConfig` fields of the same names.
public struct PreferenceDataOptions: Sendable, Equatable {
    /// The longest sequence (prompt + completion, each of chosen and rejected) fed to the model; nil: no limit.
    /// TRL's default is 1024.
    public var maxLength: Int?
    public var truncationMode: TruncationMode

    public init(maxLength: Int? = 1024, truncationMode: TruncationMode = .keepStart) {
        self.maxLength = maxLength
        self.truncationMode = truncationMode
    }

    func validate() throws(TrainingError) {
        if let maxLength, maxLength < 1 {
            throw .invalidDataOption(option: "maxLength", reason: "must be at least 1, got \(maxLength)")
        }
    }
}

/// A pair as token ids, TRL's processed-dataset columns `prompt_ids`, `chosen_ids`, `rejected_ids`: the completions
/// include the EOS token, and none of the three is truncated yet (the batch truncates, as TRL's collator does).
public struct TokenizedPair: Sendable, Equatable {
    public var promptIDs: [Int]
    public var chosenIDs: [Int]
    public var rejectedIDs: [Int]
    /// The record's line in its file.
    public var line: Int
    /// The record's soft label (`PreferencePair.preference`), nil for a hard one.
    public var preference: Double?
    /// The prompt of the rejected row when it differs from the chosen row's (`PreferencePair.tokenizedAsCPO`: TRL's
    /// ORPO/CPO tokenisation splits each completion from its prompt apart); nil: `promptIDs`.
    public var rejectedPromptIDs: [Int]?

    public init(promptIDs: [Int], chosenIDs: [Int], rejectedIDs: [Int], line: Int, preference: Double? = nil,
                rejectedPromptIDs: [Int]? = nil) {
        self.promptIDs = promptIDs
        self.chosenIDs = chosenIDs
        self.rejectedIDs = rejectedIDs
        self.line = line
        self.preference = preference
        self.rejectedPromptIDs = rejectedPromptIDs
    }
}

/// A tokenised dataset: the pairs that train, and the lines of the pairs TRL drops.
public struct TokenizedPreferences: Sendable, Equatable {
    public var pairs: [TokenizedPair]
    /// Lines of pairs whose prompt alone fills `maxLength` under keep-start truncation: no completion token would be
    /// left, so TRL's `_prepare_dataset` filters them out.
    public var droppedLines: [Int]
}

extension PreferencePair {
    /// This pair's ids as TRL 1.x's `DPOTrainer._prepare_dataset` makes them for plain-string data:
    /// 1. implicit prompt: `extract_prompt` (see `extractPrompt(chosen:rejected:)`);
    /// 2. `add_eos`: the EOS token's text is appended to chosen and to rejected unless the string already ends with it;
    /// 3. `tokenize_fn`: `prompt`, `prompt + chosen` and `prompt + rejected` are each tokenised as one string with
    ///    special tokens (so a BOS appears once, at the start); the completion begins where the prompt's ids and
    ///    the whole sequence's ids first differ (`common_prefix_length`, the smaller over chosen and rejected), which
    ///    is before the prompt's end when a token merges across the boundary (a prompt ending in a space);
    ///    `prompt_ids` is the prompt's ids up to there, `chosen_ids`/`rejected_ids` the rest of each sequence.
    /// Pre-tokenised pairs are returned as they are, after checking each id against the vocabulary.
    public func tokenized(with tokenizer: Tokenizer, path: String) throws(TrainingError) -> TokenizedPair {
        let prompt: String, chosen: String, rejected: String
        switch content {
        case .pretokenized(let promptIDs, let chosenIDs, let rejectedIDs):
            for (key, ids) in [("prompt_ids", promptIDs), ("chosen_ids", chosenIDs), ("rejected_ids", rejectedIDs)] {
                if let bad = ids.firstIndex(where: { $0 >= tokenizer.vocabularySize }) {
                    throw .invalidDataRecord(
                        path: path, line: line,
                        reason: "'\(key)'[\(bad)] = \(ids[bad]) is not a token id of the tokenizer (vocabulary size "
                            + "\(tokenizer.vocabularySize))")
                }
            }
            return TokenizedPair(promptIDs: promptIDs, chosenIDs: chosenIDs, rejectedIDs: rejectedIDs, line: line,
                                 preference: preference)
        case .explicit(let explicitPrompt, let explicitChosen, let explicitRejected):
            (prompt, chosen, rejected) = (explicitPrompt, explicitChosen, explicitRejected)
        case .implicit(let fullChosen, let fullRejected):
            (prompt, chosen, rejected) = try implicitSplit(chosen: fullChosen, rejected: fullRejected, path: path)
        }
        guard let eos = tokenizer.eosToken else {
            throw .invalidDataOption(
                option: "tokenizer '\(tokenizer.path)'",
                reason: "no EOS token (set eos_token in tokenizer_config.json): TRL appends it to every completion")
        }
        let chosenWithEOS = chosen.hasScalarSuffix(eos) ? chosen : chosen + eos
        let rejectedWithEOS = rejected.hasScalarSuffix(eos) ? rejected : rejected + eos

        let promptIDs = tokenizer.encode(prompt)
        let promptChosenIDs = tokenizer.encode(prompt + chosenWithEOS)
        let promptRejectedIDs = tokenizer.encode(prompt + rejectedWithEOS)
        let promptLength = min(
            commonPrefixLength(promptIDs, promptChosenIDs), commonPrefixLength(promptIDs, promptRejectedIDs))
        return TokenizedPair(
            promptIDs: Array(promptIDs[..<promptLength]),
            chosenIDs: Array(promptChosenIDs[promptLength...]),
            rejectedIDs: Array(promptRejectedIDs[promptLength...]),
            line: line, preference: preference)
    }
}

/// TRL's `common_prefix_length`: how many leading ids two sequences share.
func commonPrefixLength(_ ids: [Int], _ otherIDs: [Int]) -> Int {
    zip(ids, otherIDs).prefix { $0 == $1 }.count
}

extension PreferenceDataset {
    /// Every pair tokenised (`PreferencePair.tokenized(with:path:)`), then, with a `maxLength` and keep-start
    /// truncation, the pairs whose prompt has `maxLength` or more tokens dropped, as TRL's `_prepare_dataset` does.
    /// Fails with `TrainingError.emptyDataset` when every pair is dropped.
    ///
    /// `style` `.cpo` tokenises as TRL's ORPOTrainer and CPOTrainer do (`PreferencePair.tokenizedAsCPO`); a pair is
    /// then dropped when either of its prompts fills `maxLength`.
    public func tokenized(with tokenizer: Tokenizer, options: PreferenceDataOptions = PreferenceDataOptions(),
                          style: PreferenceTokenizationStyle = .dpo)
        throws(TrainingError) -> TokenizedPreferences
    {
        try options.validate()
        var kept: [TokenizedPair] = []
        var dropped: [Int] = []
        kept.reserveCapacity(pairs.count)
        for pair in pairs {
            let tokenized = style == .cpo ? try pair.tokenizedAsCPO(with: tokenizer, path: path)
                : try pair.tokenized(with: tokenizer, path: path)
            if let maxLength = options.maxLength, options.truncationMode == .keepStart,
               max(tokenized.promptIDs.count, tokenized.rejectedPromptIDs?.count ?? 0) >= maxLength {
                dropped.append(pair.line)
            } else {
                kept.append(tokenized)
            }
        }
        guard !kept.isEmpty else {
            throw .emptyDataset(
                path: path,
                reason: "every prompt has at least --max-length \(options.maxLength ?? 0) tokens, so keep-start "
                    + "truncation leaves no completion token")
        }
        return TokenizedPreferences(pairs: kept, droppedLines: dropped)
    }
}
