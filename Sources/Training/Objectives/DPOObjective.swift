import Foundation

/// The DPO family of preference losses as TRL's `DPOTrainer` computes them (Rafailov et al., "Direct Preference
/// Optimization", 2023; IPO: Azar et al., 2023; robust: Chowdhury et al., 2024; RPO: Pang et al., 2024), the
/// reference-free ORPO and SimPO as TRL's `ORPOTrainer` and `CPOTrainer(loss_type="simpo")` compute them, and TDPO
/// (`TDPO.swift`), with their gradients with respect to the policy's sequence and token log-probabilities.
///
/// With `δ = (πc − rc) − (πr − rr)` (policy and reference completion log-probabilities), `q` the pair's soft label
/// (its `preference`, else `1 − ε`), `π̄ = π / |completion|` the per-token average, `x = β·(π̄c − π̄r) − γ`:
///
///     sigmoid        −q·log σ(β·δ) − (1−q)·log σ(−β·δ)      (cDPO, Mitchell 2023; q = 1: DPO)
///     hinge          max(0, 1 − β·δ)
///     ipo            (δ̄ − 1/(2β))²                  δ̄: log-ratios divided by completion lengths
///     robust         (−(1−ε)·log σ(β·δ) + ε·log σ(−β·δ)) / (1 − 2ε)
///     sigmoid_norm   −log σ(β·δ̄)                    (SimPO-style length normalisation)
///     sft            −mean over chosen completion tokens of log p   (RPO = sigmoid + α·sft)
///     orpo           NLL − β·log σ(log(odds(π̄c) / odds(π̄r))),  odds(p̄) = e^p̄ / (1 − e^p̄)   (Hong et al. 2024;
///                    NLL: −mean of log p over every chosen token, prompt included, as TRL's ORPOTrainer)
///     simpo          −q·log σ(x) − (1−q)·log σ(−x) + cpoAlpha · NLL(chosen completion)   (Meng et al. 2024)
///     tdpo1, tdpo2   token-level DPO (Zeng et al. 2024), see `TDPO.swift`
///
/// Each term is averaged over the pairs of the batch and the terms are summed with their weights. `orpo`, `simpo`,
/// `tdpo1` and `tdpo2` stand alone (`validate()`). TRL 1.16's `DPOTrainer` ignores `label_smoothing` for `sigmoid`
/// (it reads it for `robust` and `exo_pair` only); here ε smooths `sigmoid` and `simpo` as TRL's `CPOTrainer` (and
/// TRL < 1.0's `DPOTrainer`) do, which equals TRL 1.16 at the default ε = 0. A pair's `preference` replaces `1 − ε`.
public struct DPOObjective: Sendable, Equatable {
    public enum LossType: String, Sendable, CaseIterable, Codable {
        case sigmoid, hinge, ipo, robust
        case sigmoidNorm = "sigmoid_norm"
        case sft
        case orpo, simpo
        case tdpo1, tdpo2

        /// The losses that read no reference model (`orpo`, `simpo`): a run skips the reference pass.
        public var isReferenceFree: Bool { self == .orpo || self == .simpo }
        /// The token-level losses, which read the reference's whole distribution at every completion token.
        public var isTokenLevel: Bool { self == .tdpo1 || self == .tdpo2 }
        /// The losses that cannot be combined with another term.
        var standsAlone: Bool { isReferenceFree || isTokenLevel }
    }

    public var beta: Double
    /// Loss terms with their weights (TRL's `loss_type` list and `loss_weights`).
    public var terms: [(type: LossType, weight: Double)]
    /// ε: of the robust loss, in [0, 0.5); the cDPO smoothing of `sigmoid` and `simpo` (their target `1 − ε`).
    public var labelSmoothing: Double
    /// SimPO's target reward margin γ (TRL's `simpo_gamma`).
    public var simpoGamma: Double = 0.5
    /// The weight of SimPO's NLL term on the chosen completions (TRL's `cpo_alpha`; 0 is SimPO as in the paper).
    public var cpoAlpha: Double = 1
    /// TDPO2's weight α of the sequential KL term (Zeng et al. 2024; their default 0.5).
    public var tdpoAlpha: Double = 0.5

    public init(beta: Double = 0.1, terms: [(type: LossType, weight: Double)] = [(.sigmoid, 1)], labelSmoothing: Double = 0) {
        self.beta = beta
        self.terms = terms
        self.labelSmoothing = labelSmoothing
    }

    public static func == (lhs: DPOObjective, rhs: DPOObjective) -> Bool {
        lhs.beta == rhs.beta && lhs.labelSmoothing == rhs.labelSmoothing
            && lhs.terms.map(\.type) == rhs.terms.map(\.type) && lhs.terms.map(\.weight) == rhs.terms.map(\.weight)
            && lhs.simpoGamma == rhs.simpoGamma && lhs.cpoAlpha == rhs.cpoAlpha && lhs.tdpoAlpha == rhs.tdpoAlpha
    }

    /// Whether a run needs the reference log-prob sums of the cache (false for `orpo`, `simpo` and TDPO).
    public var usesReferenceCache: Bool { !terms.contains { $0.type.standsAlone } }
    /// Whether the objective is TDPO, which needs a reference forward at every step.
    public var isTokenLevel: Bool { terms.contains { $0.type.isTokenLevel } }
    /// Whether the objective reads the log-probs of the chosen rows' prompt tokens (ORPO's NLL).
    public var scoresChosenPrompts: Bool { terms.contains { $0.type == .orpo } }

    /// How the data is tokenised: ORPO and SimPO as TRL's ORPOTrainer and CPOTrainer do, the others as DPOTrainer.
    public var tokenizationStyle: PreferenceTokenizationStyle { terms.contains { $0.type.isReferenceFree } ? .cpo : .dpo }

    /// The `ObjectiveMetrics.extra` names this objective logs.
    public var extraMetricNames: [String] {
        switch terms.first(where: { $0.type.standsAlone })?.type {
        case .orpo?: ["nll_loss", "log_odds_ratio", "log_odds_chosen"]
        case .simpo?: ["nll_loss"]
        case .tdpo1?, .tdpo2?: ["kl/chosen", "kl/rejected", "kl/margin"]
        default: []
        }
    }

    /// Checks what a user sets, naming the option at fault by its library name.
    public func validate() throws {
        func check(_ condition: Bool, _ option: String, _ reason: String) throws {
            if !condition { throw TrainingError.invalidOption(option: option, reason: reason) }
        }
        try check(beta > 0, "objective.beta", "must be positive, got \(beta)")
        try check((0...1).contains(labelSmoothing), "objective.labelSmoothing", "must be in [0, 1], got \(labelSmoothing)")
        if let alone = terms.first(where: { $0.type.standsAlone }) {
            try check(terms.count == 1, "objective.terms",
                      "\(alone.type.rawValue) cannot be combined with other losses (got \(terms.map(\.type.rawValue).joined(separator: ",")))")
        }
        try check(cpoAlpha >= 0, "objective.cpoAlpha", "must be non-negative, got \(cpoAlpha)")
        try check(tdpoAlpha >= 0, "objective.tdpoAlpha", "must be non-negative, got \(tdpoAlpha)")
        try check(simpoGamma.isFinite, "objective.simpoGamma", "must be finite, got \(simpoGamma)")
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
        /// `dLoss/d log p` of every scored chosen PROMPT token (ORPO's NLL, which reads the whole chosen sequence).
        public var chosenPromptTokenGradient: Double = 0

        /// `dLoss/d log p` of a scored token of `sequence` (chosen rows first, `pairs` of them), completion or prompt.
        public func tokenGradient(sequence: Int, pairs: Int, isCompletion: Bool) -> Double {
            guard sequence < pairs else { return rejectedSequenceGradients[sequence - pairs] }
            return isCompletion ? chosenSequenceGradients[sequence] + chosenTokenGradient : chosenPromptTokenGradient
        }
    }

    /// Evaluates the objective for `policy` log-probabilities of `2·B` sequences (chosen rows first, then the
    /// rejected rows, as TRL concatenates them) against the cached reference sums.
    ///
    /// Means divide by `totals` (default: `policy`'s own). When `policy` holds only some rows of a batch, pass the whole
    /// batch's totals: the loss, metrics and gradients are then this part's shares, which summed over the parts give
    /// the whole batch's.
    ///
    /// `preferences`: each pair's soft label (nil: `1 − ε`). `chosenPromptSums`: for ORPO, each chosen row's log-prob
    /// sum over its scored prompt tokens (its NLL divides by `totals.chosenSequenceTokens`). Reference-free losses
    /// ignore the reference sums (pass zeros).
    public func evaluate(policy: SequenceLogProbs, referenceChosen: [Double], referenceRejected: [Double],
                         totals: BatchTotals? = nil, preferences: [Double?]? = nil,
                         chosenPromptSums: [Double]? = nil) throws -> Evaluation {
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
        if let preferences, preferences.count != pairs {
            throw TrainingError.invalidTrainingState(reason: "\(preferences.count) preferences for \(pairs) pairs")
        }
        // The soft target of each pair: its preference, else 1 − ε.
        let targets = (0..<pairs).map { preferences?[$0] ?? 1 - epsilon }
        let chosenAverages = zip(chosen, chosenCounts).map { $0 / $1 }
        let rejectedAverages = zip(rejected, rejectedCounts).map { $0 / $1 }
        var chosenPromptTokenGradient = 0.0
        var extra = [String: Double]()
        for name in extraMetricNames { extra[name] = 0 }
        for (type, weight) in terms {
            if type == .orpo || type == .simpo {
                // −mean log p over the chosen tokens: ORPO's whole chosen sequences (TRL's ORPOTrainer computes its NLL
                // over prompt and completion), SimPO's completions (CPOTrainer's labels mask the prompt).
                let promptTotal = type == .orpo ? (chosenPromptSums ?? []).reduce(0, +) : 0
                let tokens = type == .orpo ? totals.chosenSequenceTokens : totals.chosenTokens
                let nllWeight = type == .orpo ? weight : weight * cpoAlpha
                let nll = tokens > 0 ? -(chosen.reduce(0, +) + promptTotal) / Double(tokens) : 0
                if type == .orpo || cpoAlpha != 0 {
                    extra["nll_loss"] = nll
                    loss += nllWeight * nll
                    chosenTokenGradient += tokens > 0 ? -nllWeight / Double(tokens) : 0
                    if type == .orpo { chosenPromptTokenGradient += tokens > 0 ? -weight / Double(tokens) : 0 }
                }
            }
            for i in 0..<pairs {
                let delta = chosenRatios[i] - rejectedRatios[i]
                // (value, d value / d δ) for the sequence-level terms; the length-normalised ones work on δ̄, whose
                // derivatives with respect to πc and πr are 1/|c| and −1/|r|.
                var value = 0.0, slope = 0.0
                var normalised = false
                switch type {
                case .sigmoid:
                    let target = targets[i]
                    value = -target * logSigmoid(beta * delta) - (1 - target) * logSigmoid(-beta * delta)
                    slope = -target * beta * sigmoid(-beta * delta) + (1 - target) * beta * sigmoid(beta * delta)
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
                case .orpo:
                    // log odds ratio of the average log-probs: (π̄c − π̄r) − (log(1 − e^π̄c) − log(1 − e^π̄r));
                    // d/dπ̄c = 1/(1 − e^π̄c), d/dπ̄r = −1/(1 − e^π̄r).
                    let (c, r) = (chosenAverages[i], rejectedAverages[i])
                    let logOdds = (c - r) - (log1mexp(c) - log1mexp(r))
                    value = -beta * logSigmoid(logOdds)
                    let dLogOdds = -beta * sigmoid(-logOdds)
                    extra["log_odds_ratio", default: 0] += logSigmoid(logOdds) / n
                    extra["log_odds_chosen", default: 0] += logOdds / n
                    loss += weight * value / n
                    dChosen[i] += weight * dLogOdds / -expm1(c) / n / chosenCounts[i]
                    dRejected[i] -= weight * dLogOdds / -expm1(r) / n / rejectedCounts[i]
                    continue
                case .simpo:
                    let target = targets[i]
                    let x = beta * (chosenAverages[i] - rejectedAverages[i]) - simpoGamma
                    value = -target * logSigmoid(x) - (1 - target) * logSigmoid(-x)
                    slope = beta * (-target * sigmoid(-x) + (1 - target) * sigmoid(x))
                    normalised = true
                case .sft, .tdpo1, .tdpo2:
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
        // Reference-free losses reward and log the average log-probs (TRL's ORPOTrainer and CPOTrainer).
        let referenceFree = terms.contains { $0.type.isReferenceFree }
        let chosenLogps = referenceFree ? chosenAverages : chosen, rejectedLogps = referenceFree ? rejectedAverages : rejected
        let chosenRewards = (referenceFree ? chosenAverages : chosenRatios).map { beta * $0 }
        let rejectedRewards = (referenceFree ? rejectedAverages : rejectedRatios).map { beta * $0 }
        let metrics = ObjectiveMetrics(
            loss: loss, chosenRewards: chosenRewards, rejectedRewards: rejectedRewards, chosenLogps: chosenLogps,
            rejectedLogps: rejectedLogps, policy: policy, totals: totals, extra: extra)
        return Evaluation(loss: loss, metrics: metrics, chosenSequenceGradients: dChosen,
                          rejectedSequenceGradients: dRejected, chosenTokenGradient: chosenTokenGradient,
                          chosenPromptTokenGradient: chosenPromptTokenGradient)
    }
}

extension ObjectiveMetrics {
    /// A batch's metrics from its per-pair rewards and log-probs (this share's pairs, means over the whole batch's
    /// `totals.pairs`), with the mean logits of `policy`'s completion tokens (over the batch's completion tokens).
    init(loss: Double, chosenRewards: [Double], rejectedRewards: [Double], chosenLogps: some Collection<Double>,
         rejectedLogps: some Collection<Double>, policy: SequenceLogProbs, totals: BatchTotals, extra: [String: Double]) {
        let n = Double(totals.pairs), pairs = chosenRewards.count
        func mean(_ values: some Sequence<Double>) -> Double { values.reduce(0, +) / n }
        let chosenTokens = Double(totals.chosenTokens), rejectedTokens = Double(totals.rejectedTokens)
        self.init(
            loss: loss,
            rewardsChosen: mean(chosenRewards),
            rewardsRejected: mean(rejectedRewards),
            rewardsAccuracies: mean(zip(chosenRewards, rejectedRewards).map { $0 > $1 ? 1 : 0 }),
            rewardsMargins: mean(zip(chosenRewards, rejectedRewards).map { $0 - $1 }),
            logpsChosen: mean(chosenLogps),
            logpsRejected: mean(rejectedLogps),
            logitsChosen: chosenTokens > 0 ? policy.meanLogitSums[0..<pairs].reduce(0, +) / chosenTokens : 0,
            logitsRejected: rejectedTokens > 0 ? policy.meanLogitSums[pairs...].reduce(0, +) / rejectedTokens : 0)
        self.extra = extra
    }
}

/// log σ(x), stable for large |x|.
func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }
/// log(1 − e^x) for x < 0, stable on both sides of −log 2 (Mächler 2012).
func log1mexp(_ x: Double) -> Double { x < -M_LN2 ? log1p(-exp(x)) : log(-expm1(x)) }
/// σ(x), stable for large |x|.
func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
