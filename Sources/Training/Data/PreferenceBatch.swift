import Tokenizers
import ONNXGraph

/// The policy's input for a batch of pairs, built as TRL 1.x's `DataCollatorForPreference` builds it: row `i` is
/// pair `i`'s prompt + chosen, row `B + i` its prompt + rejected (chosen rows first, then rejected), each truncated
/// alone to `maxLength` (keep-start: the first `maxLength` tokens; keep-end: the last), then right-padded to the
/// longest row.
///
/// Shapes, row-major in flat arrays: B pairs, R = 2·B rows, T = `sequenceLength`.
///
/// Two masks, because the log-prob of token `t` comes from the logits at position `t - 1`:
/// - `completionMask[r, t]` (TRL's `completion_mask`, token-aligned) is 1 where the TOKEN at `t` is a completion token
///   (the EOS included);
/// - `lossMask[r, t]` (logit-aligned) is 1 where the LOGITS at `t` predict a completion token:
///   `lossMask[r, t] = completionMask[r, t + 1]`, and 0 in the last column. `targetIDs[r, t] = inputIDs[r, t + 1]`
///   (the pad id in the last column) is the token those logits are scored on.
/// A sequence's log-prob is `Σ_t lossMask[r, t] · log_softmax(logits[r, t])[targetIDs[r, t]]`, which is TRL's
/// `labels[:, 1:]` / `hidden_states[:, :-1]` shift in `add_fused_lm_head` summed in `_compute_loss`. A completion
/// token at position 0 (an empty prompt without BOS, or keep-end truncation) has no logits before it and counts in
/// neither, as in TRL.
public struct PreferenceBatch: Sendable, Equatable {
    /// B: the number of pairs.
    public let pairCount: Int
    /// T: the longest row after truncation.
    public let sequenceLength: Int
    /// [2·B, T] token ids, right-padded with `padTokenID`.
    public let inputIDs: [Int]
    /// [2·B, T] 1 on real tokens, 0 on padding.
    public let attentionMask: [Int]
    /// [2·B, T] TRL's `completion_mask`: 1 where the token is a completion token.
    public let completionMask: [Int]
    /// [2·B, T] 1 where the logits predict a completion token (`completionMask` shifted left by one).
    public let lossMask: [Int]
    /// [2·B, T] the next token (`inputIDs` shifted left by one, `padTokenID` last).
    public let targetIDs: [Int]
    public let padTokenID: Int
    /// The source line of each pair.
    public let lines: [Int]

    /// R = 2·B.
    public var rowCount: Int { 2 * pairCount }

    /// Collates `pairs` (at least one). `maxLength` nil: no truncation.
    public init(
        pairs: [TokenizedPair], padTokenID: Int, maxLength: Int? = nil, truncationMode: TruncationMode = .keepStart
    ) {
        precondition(!pairs.isEmpty, "a batch needs at least one pair")
        precondition(maxLength.map { $0 >= 1 } ?? true, "maxLength must be at least 1")
        var rows: [[Int]] = []
        var masks: [[Int]] = []
        rows.reserveCapacity(2 * pairs.count)
        for completion in [\TokenizedPair.chosenIDs, \TokenizedPair.rejectedIDs] {
            for pair in pairs {
                let prompt = completion == \TokenizedPair.rejectedIDs ? pair.rejectedPromptIDs ?? pair.promptIDs : pair.promptIDs
                var ids = prompt + pair[keyPath: completion]
                var mask = [Int](repeating: 0, count: prompt.count)
                    + [Int](repeating: 1, count: pair[keyPath: completion].count)
                if let maxLength, ids.count > maxLength {
                    switch truncationMode {
                    case .keepStart:
                        ids = Array(ids.prefix(maxLength))
                        mask = Array(mask.prefix(maxLength))
                    case .keepEnd:
                        ids = Array(ids.suffix(maxLength))
                        mask = Array(mask.suffix(maxLength))
                    }
                }
                rows.append(ids)
                masks.append(mask)
            }
        }
        let length = rows.map(\.count).max() ?? 0
        var inputIDs = [Int](repeating: padTokenID, count: rows.count * length)
        var attentionMask = [Int](repeating: 0, count: rows.count * length)
        var completionMask = [Int](repeating: 0, count: rows.count * length)
        for (row, (ids, mask)) in zip(rows, masks).enumerated() {
            let start = row * length
            inputIDs.replaceSubrange(start..<(start + ids.count), with: ids)
            attentionMask.replaceSubrange(
                start..<(start + ids.count), with: repeatElement(1, count: ids.count))
            completionMask.replaceSubrange(start..<(start + mask.count), with: mask)
        }
        var lossMask = [Int](repeating: 0, count: rows.count * length)
        var targetIDs = [Int](repeating: padTokenID, count: rows.count * length)
        for row in 0..<rows.count where length > 1 {
            let start = row * length
            for t in 0..<(length - 1) {
                lossMask[start + t] = completionMask[start + t + 1]
                targetIDs[start + t] = inputIDs[start + t + 1]
            }
        }
        self.pairCount = pairs.count
        self.sequenceLength = length
        self.inputIDs = inputIDs
        self.attentionMask = attentionMask
        self.completionMask = completionMask
        self.lossMask = lossMask
        self.targetIDs = targetIDs
        self.padTokenID = padTokenID
        self.lines = pairs.map(\.line)
    }

    /// Collates `pairs` with `options`' truncation.
    public init(pairs: [TokenizedPair], padTokenID: Int, options: PreferenceDataOptions) {
        self.init(pairs: pairs, padTokenID: padTokenID, maxLength: options.maxLength,
                  truncationMode: options.truncationMode)
    }

    /// The pad id TRL's DPOTrainer uses: the tokenizer's pad token, else its EOS token.
    public static func padTokenID(for tokenizer: Tokenizer) throws(TrainingError) -> Int {
        guard let id = tokenizer.padTokenID ?? tokenizer.eosTokenID else {
            throw .invalidDataOption(
                option: "tokenizer '\(tokenizer.path)'",
                reason: "neither a pad token nor an EOS token, so batches cannot be padded")
        }
        return id
    }

    /// `input_ids` as an int64 tensor [2·B, T].
    public var inputIDsTensor: Tensor {
        Tensor(shape: [rowCount, sequenceLength], int64s: inputIDs.map { Int64($0) })
    }

    /// `attention_mask` as an int64 tensor [2·B, T].
    public var attentionMaskTensor: Tensor {
        Tensor(shape: [rowCount, sequenceLength], int64s: attentionMask.map { Int64($0) })
    }

    /// Row `row` of a [2·B, T] array of this batch.
    public func row(_ row: Int, of values: [Int]) -> ArraySlice<Int> {
        values[(row * sequenceLength)..<((row + 1) * sequenceLength)]
    }
}
