/// The denominators of a batch's means: its pairs and its chosen and rejected completion tokens. The objective divides
/// by the WHOLE batch's totals, so a process that holds only some rows of it (data parallelism) computes its share of
/// the sums, and the shares add up over the processes to the one-process loss, metrics and gradients: pair means
/// (`1/B`), and the token-weighted `sft` term and `logits/*` means (`1/N`).
public struct BatchTotals: Sendable, Equatable {
    /// B: the pairs of the batch.
    public var pairs: Int
    /// Completion tokens scored over the chosen rows (TRL's `completion_mask[:, 1:]` summed).
    public var chosenTokens: Int
    /// Completion tokens scored over the rejected rows.
    public var rejectedTokens: Int
    /// Every token after the first of the chosen rows, prompt included, padding excluded (TRL's ORPO NLL counts
    /// `attention_mask[:, 1:]` of the chosen rows); 0 when unknown (only ORPO reads it).
    public var chosenSequenceTokens: Int = 0

    public init(pairs: Int, chosenTokens: Int, rejectedTokens: Int, chosenSequenceTokens: Int = 0) {
        self.pairs = pairs
        self.chosenTokens = chosenTokens
        self.rejectedTokens = rejectedTokens
        self.chosenSequenceTokens = chosenSequenceTokens
    }

    /// The totals of a collated batch: the tokens `SequenceLogProbs` scores, which are the ones `lossMask` marks.
    public init(_ batch: PreferenceBatch) {
        let half = batch.pairCount * batch.sequenceLength
        self.init(pairs: batch.pairCount, chosenTokens: batch.lossMask[..<half].reduce(0, +),
                  rejectedTokens: batch.lossMask[half...].reduce(0, +),
                  chosenSequenceTokens: (0..<batch.pairCount).reduce(0) { $0 + batch.row($1, of: batch.attentionMask).dropFirst().reduce(0, +) })
    }

    /// The totals of `policy`'s own sequences (chosen rows first, then as many rejected rows).
    public init(_ policy: SequenceLogProbs) {
        let pairs = policy.counts.count / 2
        self.init(pairs: pairs, chosenTokens: policy.counts[..<pairs].reduce(0, +),
                  rejectedTokens: policy.counts[pairs...].reduce(0, +))
    }
}
