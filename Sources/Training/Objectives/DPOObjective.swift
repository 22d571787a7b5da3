import Foundation

/// The DPO family of preference losses as TRL's `DPOTrainer` computes them (Rafailov et al., "Direct Preference
/// Optimization", 2023; IPO: Azar et al., 2023; robust: Chowdhury et al., 2024; RPO: Pang et al., 2024), with
/// their gradients with respect to the policy's sequence and token log-probabilities.
///
/// With `δ = (πc − rc) − (πr − rr)` (policy and reference completion log-probabilities):
///
///     sigmoid        −log σ(β·δ)
///     hinge          max(0, 1 − β·δ)
///     ipo            (δ̄ − 1/(2β))²                  δ̄: log-ratios divided by completion lengths
///     robust         (−(1−ε)·log σ(β·δ) + ε·log σ(−β·δ)) / (1 − 2ε)
///     sigmoid_norm   −log σ(β·δ̄)                    (SimPO-style length normalisation)
///     sft            −mean over chosen completion tokens of log p   (RPO = sigmoid + α·sft)
///
/// Each term is averaged over the pairs of the batch and the terms are summed with their weights.
public struct DPOObjective: Sendable, Equatable {
    public enum LossType: String, Sendable, CaseIterable, Codable {
        case sigmoid, hinge, ipo, robust
        case sigmoidNorm = "sigmoid_norm"
        case sft
    }

    public var beta: Double
    /// Loss terms with their weights (TRL's `loss_type` list and `loss_weights`).
    public var terms: [(type: LossType, weight: Double)]
    /// ε of the robust loss, in [0, 0.5).
    public var labelSmoothing: Double

    public init(beta: Double = 0.1, terms: [(type: LossType, weight: Double)] = [(.sigmoid, 1)], labelSmoothing: Double = 0) {
        self.beta = beta
        self.terms = terms
        self.labelSmoothing = labelSmoothing
    }

    public static func == (lhs: DPOObjective, rhs: DPOObjective) -> Bool {
        lhs.beta == rhs.beta && lhs.labelSmoothing == rhs.labelSmoothing
            && lhs.terms.map(\.type) == rhs.terms.map(\.type) && lhs.terms.map(\.weight) == rhs.terms.map(\.weight)
    }

    /// The loss of a batch, its metrics, and the loss's derivatives.
    public struct Evaluation: Sendable {
        public var loss: Double
        /// Rewards, their accuracy and margin, log-probabilities and mean logits of the batch (TRL's metrics).
        public var metrics: ObjectiveMetrics
        /// `dLoss/dπc[i]` and `dLoss/dπr[i]` for each pair (the sequence log-probability sums).
        public var chosenSequenceGradients: [Double]
        public var rejectedSequenceGradients: [Double]
        /// `dLoss/d log p` added to every chosen completion token (the sft term's `−weight / N`).
        public var chosenTokenGradient: Double
    }

    /// Evaluates the objective for `policy` log-probabilities of `2·B` sequences (chosen rows first, then the
    /// rejected rows, as TRL concatenates them) against the cached reference sums.
    ///
    /// Means divide by `totals` (default: `policy`'s own). When `policy` holds only some rows of a batch, pass the whole
    /// batch's totals: the loss, metrics and gradients are then this part's shares, which summed over the parts give
    /// the whole batch's.
    public func evaluate(policy: SequenceLogProbs, referenceChosen: [Double], referenceRejected: [Double],
                         totals: BatchTotals? = nil) throws -> Evaluation {
        let pairs = referenceChosen.count
        guard policy.sums.count == 2 * pairs, referenceRejected.count == pairs, pairs > 0 else {
            throw TrainingError.invalidTrainingState(reason: "\(policy.sums.count) sequences for \(pairs) pairs")
        }
        if terms.contains(where: { $0.type == .robust }) && !(0..<0.5).contains(labelSmoothing) {
            throw TrainingError.invalidTrainingState(reason: "the robust loss needs a label smoothing in [0, 0.5), got \(labelSmoothing)")
        }
        let chosen = Array(policy.sums[0..<pairs]), rejected = Array(policy.sums[pairs...])
        let chosenCounts = policy.counts[0..<pairs].map { Double(max($0, 1)) }
        let rejectedCounts = policy.counts[pairs...].map { Double(max($0, 1)) }
        let chosenRatios = zip(chosen, referenceChosen).map { $0 - $1 }
        let rejectedRatios = zip(rejected, referenceRejected).map { $0 - $1 }
        var loss = 0.0
        var dChosen = [Double](repeating: 0, count: pairs), dRejected = [Double](repeating: 0, count: pairs)
        var chosenTokenGradient = 0.0
        let totals = totals ?? BatchTotals(policy)
        let beta = self.beta, epsilon = labelSmoothing, n = Double(totals.pairs)
        for (type, weight) in terms {
            for i in 0..<pairs {
                let delta = chosenRatios[i] - rejectedRatios[i]
                // (value, d value / d δ) for the sequence-level terms; the length-normalised ones work on δ̄, whose
                // derivatives with respect to πc and πr are 1/|c| and −1/|r|.
                var value = 0.0, slope = 0.0
                var normalised = false
                switch type {
                case .sigmoid:
                    value = -logSigmoid(beta * delta)
                    slope = -beta * sigmoid(-beta * delta)
                case .hinge:
                    value = max(0, 1 - beta * delta)
                    slope = 1 - beta * delta > 0 ? -beta : 0
                case .robust:
                    value = (-(1 - epsilon) * logSigmoid(beta * delta) + epsilon * logSigmoid(-beta * delta)) / (1 - 2 * epsilon)
                    slope = (-(1 - epsilon) * beta * sigmoid(-beta * delta) - epsilon * beta * sigmoid(beta * delta)) / (1 - 2 * epsilon)
                case .ipo:
                    let normalisedDelta = chosenRatios[i] / chosenCounts[i] - rejectedRatios[i] / rejectedCounts[i]
                    value = pow(normalisedDelta - 1 / (2 * beta), 2)
                    slope = 2 * (normalisedDelta - 1 / (2 * beta))
                    normalised = true
                case .sigmoidNorm:
                    let normalisedDelta = chosenRatios[i] / chosenCounts[i] - rejectedRatios[i] / rejectedCounts[i]
                    value = -logSigmoid(beta * normalisedDelta)
                    slope = -beta * sigmoid(-beta * normalisedDelta)
                    normalised = true
                case .sft:
                    continue
                }
                loss += weight * value / n
                dChosen[i] += weight * slope / n / (normalised ? chosenCounts[i] : 1)
                dRejected[i] -= weight * slope / n / (normalised ? rejectedCounts[i] : 1)
            }
            if type == .sft {
                // −mean of log p over every chosen completion token of the batch.
                let tokens = totals.chosenTokens
                let total = chosen.reduce(0, +)
                loss += weight * (tokens > 0 ? -total / Double(tokens) : 0)
                chosenTokenGradient += tokens > 0 ? -weight / Double(tokens) : 0
            }
        }
        let chosenRewards = chosenRatios.map { beta * $0 }, rejectedRewards = rejectedRatios.map { beta * $0 }
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / n }
        let chosenTokens = Double(totals.chosenTokens), rejectedTokens = Double(totals.rejectedTokens)
        let metrics = ObjectiveMetrics(
            loss: loss,
            rewardsChosen: mean(chosenRewards),
            rewardsRejected: mean(rejectedRewards),
            rewardsAccuracies: mean(zip(chosenRewards, rejectedRewards).map { $0 > $1 ? 1 : 0 }),
            rewardsMargins: mean(zip(chosenRewards, rejectedRewards).map { $0 - $1 }),
            logpsChosen: mean(chosen),
            logpsRejected: mean(rejected),
            logitsChosen: chosenTokens > 0 ? policy.meanLogitSums[0..<pairs].reduce(0, +) / chosenTokens : 0,
            logitsRejected: rejectedTokens > 0 ? policy.meanLogitSums[pairs...].reduce(0, +) / rejectedTokens : 0)
        return Evaluation(loss: loss, metrics: metrics, chosenSequenceGradients: dChosen,
                          rejectedSequenceGradients: dRejected, chosenTokenGradient: chosenTokenGradient)
    }
}

/// log σ(x), stable for large |x|.
func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }
/// σ(x), stable for large |x|.
func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
