import Tokenizers

/// How preference pairs become ids: as TRL's `DPOTrainer` tokenises them (`PreferencePair.tokenized(with:path:)`), or
/// as its `ORPOTrainer` and `CPOTrainer` do (`PreferencePair.tokenizedAsCPO(with:path:)`), the reference of the ORPO
/// and SimPO losses.
public enum PreferenceTokenizationStyle: String, Sendable, CaseIterable {
    case dpo, cpo
}

extension PreferencePair {
    /// This pair's ids as TRL 1.x's `ORPOTrainer.tokenize_row` and `CPOTrainer.tokenize_row` (the same code) make them
    /// for plain-string data, which differs from DPO's (`tokenized(with:path:)`):
    /// 1. implicit prompt: `extract_prompt`, as for DPO;
    /// 2. `build_tokenized_answer`, for chosen and for rejected: the prompt and prompt + completion are tokenised WITHOUT
    ///    special tokens; the completion starts at the prompt's length, one token earlier when the prompt's ids are not
    ///    a prefix of the whole (its last token merged across the boundary). So the two completions may have prompts
    ///    one token apart (`TokenizedPair.rejectedPromptIDs`); more than that is an error, as in TRL;
    /// 3. the BOS id is put before each prompt that does not start with it, whenever the tokenizer has a BOS token
    ///    (GPT-2's `<|endoftext|>` too), and the EOS id after each completion that does not end with it.
    /// A pair whose prompt alone fills `maxLength` is dropped (`PreferenceDataset.tokenized`), where TRL keeps the
    /// prompt with an empty completion, whose average log-probability is NaN. Pre-tokenised pairs are taken as given.
    public func tokenizedAsCPO(with tokenizer: Tokenizer, path: String) throws(TrainingError) -> TokenizedPair {
        let prompt: String, chosen: String, rejected: String
        switch content {
        case .conversational:
            throw .invalidDataRecord(
                path: path, line: line,
                reason: "ORPO and SimPO do not read conversational records yet (TRL's ORPO/CPO tokenisation of them is "
                    + "not reproduced): render them with `onnx-dpo chat-template` and write prompt/chosen/rejected strings")
        case .pretokenized:
            return try tokenized(with: tokenizer, path: path)
        case .explicit(let explicitPrompt, let explicitChosen, let explicitRejected):
            (prompt, chosen, rejected) = (explicitPrompt, explicitChosen, explicitRejected)
        case .implicit(let fullChosen, let fullRejected):
            (prompt, chosen, rejected) = try implicitSplit(chosen: fullChosen, rejected: fullRejected, path: path)
        }
        guard let eos = tokenizer.eosTokenID else {
            throw .invalidDataOption(
                option: "tokenizer '\(tokenizer.path)'",
                reason: "no EOS token (set eos_token in tokenizer_config.json): TRL appends it to every completion")
        }
        let promptIDs = tokenizer.encode(prompt, addSpecialTokens: false)
        func answer(_ completion: String) throws(TrainingError) -> (prompt: [Int], completion: [Int]) {
            let whole = tokenizer.encode(prompt + completion, addSpecialTokens: false)
            guard whole.count >= promptIDs.count else {
                throw .invalidDataRecord(
                    path: path, line: line,
                    reason: "prompt + completion has fewer tokens than the prompt alone, which TRL's ORPO/CPO "
                        + "tokenisation refuses")
            }
            var start = promptIDs.count
            if Array(whole[..<start]) != promptIDs { start -= 1 }
            var (promptPart, completionPart) = (Array(whole[..<start]), Array(whole[start...]))
            if let bos = tokenizer.bosTokenID, promptPart.first != bos { promptPart.insert(bos, at: 0) }
            if completionPart.last != eos { completionPart.append(eos) }
            return (promptPart, completionPart)
        }
        let (chosenPrompt, chosenIDs) = try answer(chosen)
        let (rejectedPrompt, rejectedIDs) = try answer(rejected)
        let differing = zip(chosenPrompt, rejectedPrompt).filter { $0 != $1 }.count
        guard differing <= 1, abs(chosenPrompt.count - rejectedPrompt.count) <= 1 else {
            throw .invalidDataRecord(
                path: path, line: line,
                reason: "the prompt tokenises differently before chosen and before rejected by more than its last "
                    + "token, which TRL's ORPO/CPO tokenisation refuses")
        }
        return TokenizedPair(promptIDs: chosenPrompt, chosenIDs: chosenIDs, rejectedIDs: rejectedIDs, line: line,
                             preference: preference, rejectedPromptIDs: rejectedPrompt == chosenPrompt ? nil : rejectedPrompt)
    }

    /// An implicit-prompt record's prompt and completions (`extractPrompt`), or an error naming its line.
    func implicitSplit(chosen: String, rejected: String, path: String) throws(TrainingError)
        -> (prompt: String, chosen: String, rejected: String)
    {
        guard let split = extractPrompt(chosen: chosen, rejected: rejected) else {
            throw .invalidDataRecord(
                path: path, line: line,
                reason: "an implicit-prompt record needs non-empty 'chosen' and 'rejected' to find their shared prompt")
        }
        return split
    }
}
