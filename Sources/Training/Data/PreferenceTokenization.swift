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
    /// Conversational pairs go through `conversationalIDs(_:with:chatTemplate:path:)`, with `chatTemplate`.
    public func tokenized(with tokenizer: Tokenizer, chatTemplate: TokenizerChatTemplate? = nil, path: String)
        throws(TrainingError) -> TokenizedPair
    {
        let prompt: String, chosen: String, rejected: String
        switch content {
        case .conversational(let conversation):
            return try conversationalIDs(conversation, with: tokenizer, chatTemplate: chatTemplate, path: path)
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

        return splitAtPrompt(
            tokenizer.encode(prompt), tokenizer.encode(prompt + chosenWithEOS), tokenizer.encode(prompt + rejectedWithEOS))
    }
}

extension PreferencePair {
    /// A conversational pair's ids as TRL 1.x's `DPOTrainer._prepare_dataset` makes them:
    /// 1. implicit prompt: `extract_prompt` on the message lists (`extractPrompt(chosen:rejected:)`);
    /// 2. no EOS is appended (the template ends each turn itself);
    /// 3. `apply_chat_template(prompt, add_generation_prompt=True, tools=tools, **chat_template_kwargs)`, and the
    ///    same without the generation prompt over `prompt + chosen` and `prompt + rejected`, each rendered text
    ///    tokenised with `add_special_tokens=False` (a BOS comes from the template's `{{ bos_token }}`);
    /// 4. split at the common prefix of the prompt's ids and each sequence's ids, as for plain strings.
    func conversationalIDs(_ conversation: Conversation, with tokenizer: Tokenizer,
                           chatTemplate: TokenizerChatTemplate?, path: String) throws(TrainingError) -> TokenizedPair
    {
        guard let chatTemplate else {
            throw .invalidDataOption(
                option: "tokenizer '\(tokenizer.path)'",
                reason: "conversational data needs a chat template: chat_template in the tokenizer_config.json beside "
                    + "it (or chat_template.jinja), or chatTemplatePath (--chat-template)")
        }
        let prompt: [JSONValue], chosen: [JSONValue], rejected: [JSONValue]
        if let explicitPrompt = conversation.prompt {
            (prompt, chosen, rejected) = (explicitPrompt, conversation.chosen, conversation.rejected)
        } else {
            guard let split = extractPrompt(chosen: conversation.chosen, rejected: conversation.rejected) else {
                throw .invalidDataRecord(
                    path: path, line: line,
                    reason: "an implicit-prompt conversational record needs non-empty 'chosen' and 'rejected' message "
                        + "lists to find their shared prompt")
            }
            (prompt, chosen, rejected) = split
        }
        func ids(_ messages: [JSONValue], generationPrompt: Bool, part: String) throws(TrainingError) -> [Int] {
            do {
                let text = try chatTemplate.render(
                    messages: messages, addGenerationPrompt: generationPrompt, tools: conversation.tools,
                    context: conversation.templateVariables)
                return tokenizer.encode(text, addSpecialTokens: false)
            } catch {
                throw .invalidDataRecord(
                    path: path, line: line, reason: "the chat template of '\(chatTemplate.configPath)' failed on \(part): "
                        + "\(error)")
            }
        }
        let promptIDs = try ids(prompt, generationPrompt: true, part: "the prompt")
        let promptChosenIDs = try ids(prompt + chosen, generationPrompt: false, part: "prompt + chosen")
        let promptRejectedIDs = try ids(prompt + rejected, generationPrompt: false, part: "prompt + rejected")
        return splitAtPrompt(promptIDs, promptChosenIDs, promptRejectedIDs)
    }

    /// TRL's split: the completion begins where the prompt's ids and each whole sequence's ids first differ (the
    /// smaller over chosen and rejected).
    func splitAtPrompt(_ promptIDs: [Int], _ promptChosenIDs: [Int], _ promptRejectedIDs: [Int]) -> TokenizedPair {
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
    /// Every pair tokenised (`PreferencePair.tokenized(with:chatTemplate:path:)`), then, with a `maxLength` and
    /// keep-start truncation, the pairs whose prompt has `maxLength` or more tokens dropped, as TRL's
    /// `_prepare_dataset` does. Fails with `TrainingError.emptyDataset` when every pair is dropped.
    ///
    /// `style` `.cpo` tokenises as TRL's ORPOTrainer and CPOTrainer do (`PreferencePair.tokenizedAsCPO`); a pair is
    /// then dropped when either of its prompts fills `maxLength`.
    public func tokenized(with tokenizer: Tokenizer, options: PreferenceDataOptions = PreferenceDataOptions(),
                          style: PreferenceTokenizationStyle = .dpo, chatTemplate: TokenizerChatTemplate? = nil)
        throws(TrainingError) -> TokenizedPreferences
    {
        try options.validate()
        var kept: [TokenizedPair] = []
        var dropped: [Int] = []
        kept.reserveCapacity(pairs.count)
        for pair in pairs {
            let tokenized = style == .cpo ? try pair.tokenizedAsCPO(with: tokenizer, path: path)
                : try pair.tokenized(with: tokenizer, chatTemplate: chatTemplate, path: path)
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
