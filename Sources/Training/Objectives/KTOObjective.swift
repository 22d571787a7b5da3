import Foundation
import Interpreter
import ONNXGraph

/// Kahneman–Tversky Optimisation on unpaired data (Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic
/// Optimization", 2024, eq. 7) as TRL 1.16's `KTOTrainer` computes it, with its gradients with respect to the policy's
/// completion log-probabilities.
///
/// A batch of B rows holds completions `y` after prompts `x`, each desirable or undesirable, and for each a KL
/// completion `y'` (another row's completion after the same `x`). With `r = π(y|x) − π_ref(y|x)` (completion
/// log-probability sums) and the KL estimate `z = max(0, mean over rows of π(y'|x) − π_ref(y'|x))`, detached (no
/// gradient flows through it, as TRL computes it under `no_grad`):
///
///     kto                 desirable: w_d·(1 − σ(β·(r − z)))     undesirable: w_u·(1 − σ(β·(z − r)))
///     apo_zero_unpaired   desirable: w_d·(1 − σ(β·r))           undesirable: w_u·σ(β·r)
///
/// (`apo_zero_unpaired`: D'Oosterlinck et al. 2024, "Anchored Preference Optimization", without a KL term.)
/// The loss is the mean over the B rows. Metrics, TRL's: `kl` (z), `rewards/chosen` and `logps/chosen` (means of `β·r`
/// and `π` over the desirable rows), `rewards/rejected` and `logps/rejected` (over the undesirable ones),
/// `rewards/margins` (their difference, when the batch has both), `logits/chosen` and `logits/rejected` (the mean
/// logit over the completion tokens of each kind), and `entropy` (the mean over every completion token of the entropy of
/// the policy's next-token distribution) when the logits are given. A kind the batch lacks has no metric, as in TRL.
public struct KTOObjective: Sendable, Equatable {
    public enum LossType: String, Sendable, CaseIterable, Codable {
        case kto
        case apoZeroUnpaired = "apo_zero_unpaired"
    }

    public var lossType: LossType
    public var beta: Double
    /// w_d: the desirable rows' weight (TRL's `desirable_weight`).
    public var desirableWeight: Double
    /// w_u: the undesirable rows' weight (TRL's `undesirable_weight`).
    public var undesirableWeight: Double

    public init(lossType: LossType = .kto, beta: Double = 0.1, desirableWeight: Double = 1, undesirableWeight: Double = 1) {
        self.lossType = lossType
        self.beta = beta
        self.desirableWeight = desirableWeight
        self.undesirableWeight = undesirableWeight
    }

    /// Whether the loss has the KL term, so each row needs a KL completion (TRL's `calculate_KL`).
    public var estimatesKL: Bool { lossType == .kto }

    /// The denominators of a batch's means (as `BatchTotals` for DPO): a process holding only some rows of the batch
    /// divides by the whole batch's totals, so its loss, metrics and gradients are shares that add up.
    public struct Totals: Sendable, Equatable {
        /// B: the rows of the batch.
        public var rows: Int
        public var desirable: Int
        public var undesirable: Int
        /// Completion tokens scored over the desirable rows, and over the undesirable ones.
        public var desirableTokens: Int
        public var undesirableTokens: Int

        public init(rows: Int, desirable: Int, undesirable: Int, desirableTokens: Int, undesirableTokens: Int) {
            self.rows = rows
            self.desirable = desirable
            self.undesirable = undesirable
            self.desirableTokens = desirableTokens
            self.undesirableTokens = undesirableTokens
        }

        /// The totals of `policy`'s completion rows (its first `labels.count` sequences).
        public init(_ policy: SequenceLogProbs, labels: [Bool]) {
            let counts = Array(policy.counts.prefix(labels.count))
            self.init(rows: labels.count, desirable: labels.filter { $0 }.count, undesirable: labels.filter { !$0 }.count,
                      desirableTokens: zip(counts, labels).filter(\.1).map(\.0).reduce(0, +),
                      undesirableTokens: zip(counts, labels).filter { !$0.1 }.map(\.0).reduce(0, +))
        }

        /// The totals of a collated batch of unpaired rows (completion rows first, KL rows after them).
        public init(_ batch: PreferenceBatch, labels: [Bool]) {
            var tokens = (desirable: 0, undesirable: 0)
            for (row, isDesirable) in labels.enumerated() {
                let count = batch.row(row, of: batch.lossMask).reduce(0, +)
                if isDesirable { tokens.desirable += count } else { tokens.undesirable += count }
            }
            self.init(rows: labels.count, desirable: labels.filter { $0 }.count, undesirable: labels.filter { !$0 }.count,
                      desirableTokens: tokens.desirable, undesirableTokens: tokens.undesirable)
        }
    }

    /// Σ over the rows of `π(y'|x) − π_ref(y'|x)`: the numerator of the KL estimate (a share's part of it, summed over
    /// the processes before `evaluate`). `policy`'s KL rows follow its `referenceKL.count` completion rows.
    public static func klSum(policy: SequenceLogProbs, referenceKL: [Double]) -> Double {
        zip(policy.sums.suffix(referenceKL.count), referenceKL).map { $0 - $1 }.reduce(0, +)
    }

    /// Σ over the completion tokens of the first `rows` sequences of `policy` (the completion rows; `logits` holds the
    /// rows `policy.tokens` name) of the entropy of the next-token distribution,
    /// `H(z) = log Σ_v exp z_v − Σ_v softmax(z)_v · z_v`.
    public static func entropySum(logits: Tensor, policy: SequenceLogProbs, rows: Int) -> Double {
        let vocabulary = logits.shape.last ?? 0
        let values = logits.floats
        let tokens = policy.tokens.filter { $0.sequence < rows }
        var entropies = [Double](repeating: 0, count: tokens.count)
        values.withUnsafeBufferPointer { source in
            entropies.withUnsafeMutableBufferPointer { target in
                let (input, output) = (source.baseAddress!, target.baseAddress!)
                Parallel.forEachChunk(tokens.count, minimumPerThread: max(1, 65_536 / max(vocabulary, 1))) { range in
                    for index in range {
                        let row = input + tokens[index].row * vocabulary
                        var maximum = -Float.infinity
                        for v in 0..<vocabulary where row[v] > maximum { maximum = row[v] }
                        var sum = 0.0, weighted = 0.0
                        for v in 0..<vocabulary {
                            let e = Double(fastExp(row[v] - maximum))
                            sum += e
                            weighted += e * Double(row[v])
                        }
                        output[index] = Double(maximum) + log(sum) - weighted / sum
                    }
                }
            }
        }
        return entropies.reduce(0, +)
    }

    /// Evaluates the objective for `policy` log-probabilities of `2·B` sequences (the B completion rows, then their B
    /// KL rows) against the cached reference sums of both. `klSum` is the whole batch's KL numerator (default: this
    /// part's own, `klSum(policy:referenceKL:)`), `totals` its denominators (default: `policy`'s own); `entropySum`
    /// (`entropySum(logits:policy:rows:)`) gives the `entropy` metric.
    ///
    /// The result's `chosenSequenceGradients` are `dLoss/dπ(y|x)` per completion row; its `rejectedSequenceGradients`
    /// (the KL rows') are zero: the KL estimate is detached.
    public func evaluate(policy: SequenceLogProbs, labels: [Bool], reference: [Double], referenceKL: [Double],
                         totals: Totals? = nil, klSum: Double? = nil, entropySum: Double? = nil) throws
        -> DPOObjective.Evaluation
    {
        let rows = labels.count
        guard rows > 0, policy.sums.count == 2 * rows, reference.count == rows, referenceKL.count == rows else {
            throw TrainingError.invalidTrainingState(
                reason: "\(policy.sums.count) sequences, \(reference.count) and \(referenceKL.count) reference sums for \(rows) rows")
        }
        let totals = totals ?? Totals(policy, labels: labels)
        let n = Double(totals.rows)
        let kl = estimatesKL ? max(0, (klSum ?? Self.klSum(policy: policy, referenceKL: referenceKL)) / n) : 0
        let beta = self.beta
        var loss = 0.0
        var gradients = [Double](repeating: 0, count: rows)
        var sums = (rewardsChosen: 0.0, rewardsRejected: 0.0, logpsChosen: 0.0, logpsRejected: 0.0)
        var logitSums = (chosen: 0.0, rejected: 0.0)
        for row in 0..<rows {
            let logRatio = policy.sums[row] - reference[row]
            // (1 − σ(x)) with x = ±β·(r − z): its derivative with respect to r is ∓β·σ(x)·(1 − σ(x)); σ(β·r)'s is
            // β·σ(β·r)·(1 − σ(β·r)).
            let x: Double, value: Double, slope: Double, weight: Double
            if labels[row] {
                x = beta * (logRatio - kl)
                value = 1 - sigmoid(x)
                slope = -beta * sigmoid(x) * sigmoid(-x)
                weight = desirableWeight
                sums.rewardsChosen += beta * logRatio
                sums.logpsChosen += policy.sums[row]
                logitSums.chosen += policy.meanLogitSums[row]
            } else {
                switch lossType {
                case .kto:
                    x = beta * (kl - logRatio)
                    value = 1 - sigmoid(x)
                    slope = beta * sigmoid(x) * sigmoid(-x)
                case .apoZeroUnpaired:
                    x = beta * logRatio
                    value = sigmoid(x)
                    slope = beta * sigmoid(x) * sigmoid(-x)
                }
                weight = undesirableWeight
                sums.rewardsRejected += beta * logRatio
                sums.logpsRejected += policy.sums[row]
                logitSums.rejected += policy.meanLogitSums[row]
            }
            loss += weight * value / n
            gradients[row] = weight * slope / n
        }
        // This part's share of z (all of it when alone), so that the shares add up to z like the other metrics.
        var metrics: [String: Double] = ["loss": loss, "kl": rows == totals.rows ? kl : kl * Double(rows) / n]
        if totals.desirable > 0 {
            metrics["rewards/chosen"] = sums.rewardsChosen / Double(totals.desirable)
            metrics["logps/chosen"] = sums.logpsChosen / Double(totals.desirable)
        }
        if totals.undesirable > 0 {
            metrics["rewards/rejected"] = sums.rewardsRejected / Double(totals.undesirable)
            metrics["logps/rejected"] = sums.logpsRejected / Double(totals.undesirable)
        }
        if totals.desirable > 0, totals.undesirable > 0 {
            metrics["rewards/margins"] = metrics["rewards/chosen"]! - metrics["rewards/rejected"]!
        }
        if let entropySum, totals.desirableTokens + totals.undesirableTokens > 0 {
            metrics["entropy"] = entropySum / Double(totals.desirableTokens + totals.undesirableTokens)
        }
        if totals.desirableTokens > 0 { metrics["logits/chosen"] = logitSums.chosen / Double(totals.desirableTokens) }
        if totals.undesirableTokens > 0 { metrics["logits/rejected"] = logitSums.rejected / Double(totals.undesirableTokens) }
        return DPOObjective.Evaluation(loss: loss, metrics: ObjectiveMetrics(named: metrics),
                                       chosenSequenceGradients: gradients,
                                       rejectedSequenceGradients: [Double](repeating: 0, count: rows),
                                       chosenTokenGradient: 0)
    }
}
