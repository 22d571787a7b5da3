// The metrics a training run reports, as Swift values. TRL's names (`rewards/chosen`, `grad_norm`) appear only
// where the metrics are written (`metrics.jsonl`, `eval --json`): each type's `Codable` conformance spells them, so
// a file compares key for key with TRL's `log_history`.

/// What the DPO objective measures on a batch, or on a dataset, averaged over its pairs (TRL's `DPOTrainer`
/// metrics). Rewards are the implicit DPO rewards `β·(π − r)`: policy minus reference completion log-probability.
public struct ObjectiveMetrics: Sendable, Equatable {
    /// The objective's loss (all its terms, weighted).
    public var loss: Double
    /// Mean reward of the chosen completions.
    public var rewardsChosen: Double
    /// Mean reward of the rejected completions.
    public var rewardsRejected: Double
    /// Fraction of pairs whose chosen reward is strictly above the rejected one.
    public var rewardsAccuracies: Double
    /// Mean of chosen minus rejected reward.
    public var rewardsMargins: Double
    /// Mean policy log-probability (sum over the completion's tokens) of the chosen completions.
    public var logpsChosen: Double
    /// Mean policy log-probability of the rejected completions.
    public var logpsRejected: Double
    /// Mean logit (over the vocabulary, then the completion tokens) of the chosen completions.
    public var logitsChosen: Double
    /// Mean logit of the rejected completions.
    public var logitsRejected: Double
    /// The metrics only some objectives log, by TRL's name (`extraNames`): ORPO's `nll_loss`, `log_odds_ratio` and
    /// `log_odds_chosen`, SimPO's `nll_loss`, TDPO's `kl/chosen`, `kl/rejected` and `kl/margin`. Empty for DPO.
    public var extra: [String: Double] = [:]

    public init(loss: Double, rewardsChosen: Double, rewardsRejected: Double, rewardsAccuracies: Double,
                rewardsMargins: Double, logpsChosen: Double, logpsRejected: Double, logitsChosen: Double,
                logitsRejected: Double) {
        self.loss = loss
        self.rewardsChosen = rewardsChosen
        self.rewardsRejected = rewardsRejected
        self.rewardsAccuracies = rewardsAccuracies
        self.rewardsMargins = rewardsMargins
        self.logpsChosen = logpsChosen
        self.logpsRejected = logpsRejected
        self.logitsChosen = logitsChosen
        self.logitsRejected = logitsRejected
    }

    /// Every metric at 0: the start of a sum.
    public static let zero = ObjectiveMetrics(loss: 0, rewardsChosen: 0, rewardsRejected: 0, rewardsAccuracies: 0,
                                              rewardsMargins: 0, logpsChosen: 0, logpsRejected: 0, logitsChosen: 0,
                                              logitsRejected: 0)

    /// TRL's name of each metric: the one place they are spelled.
    static var fields: [(name: String, keyPath: WritableKeyPath<ObjectiveMetrics, Double>)] { [
        ("loss", \.loss),
        ("rewards/chosen", \.rewardsChosen),
        ("rewards/rejected", \.rewardsRejected),
        ("rewards/accuracies", \.rewardsAccuracies),
        ("rewards/margins", \.rewardsMargins),
        ("logps/chosen", \.logpsChosen),
        ("logps/rejected", \.logpsRejected),
        ("logits/chosen", \.logitsChosen),
        ("logits/rejected", \.logitsRejected),
    ] }

    /// The names `extra` may hold (TRL's `ORPOTrainer` and `CPOTrainer` names, and the TDPO paper code's `kl/*`).
    public static let extraNames = ["nll_loss", "log_odds_ratio", "log_odds_chosen", "kl/chosen", "kl/rejected", "kl/margin"]

    /// Every metric at 0, with `extra` holding `names` at 0: the start of a sum that every process and micro-batch
    /// shares, so the sums line up even for a share with no rows.
    public static func zero(extra names: [String]) -> ObjectiveMetrics {
        var metrics = ObjectiveMetrics.zero
        for name in names { metrics.extra[name] = 0 }
        return metrics
    }

    /// The first metric that is NaN or infinite, by TRL's name, and its value.
    public var firstNonFinite: (name: String, value: Double)? {
        Self.fields.first { !self[keyPath: $0.keyPath].isFinite }.map { ($0.name, self[keyPath: $0.keyPath]) }
            ?? extra.sorted { $0.key < $1.key }.first { !$0.value.isFinite }.map { ($0.key, $0.value) }
    }

    /// `transform` applied to each metric.
    public func map(_ transform: (Double) -> Double) -> ObjectiveMetrics {
        var result = self
        for (_, keyPath) in Self.fields { result[keyPath: keyPath] = transform(self[keyPath: keyPath]) }
        result.extra = extra.mapValues(transform)
        return result
    }

    /// `combine` applied metric by metric (`a.combined(with: b, +)` sums two batches' metrics); an `extra` metric
    /// only one side has counts as 0 on the other.
    public func combined(with other: ObjectiveMetrics, _ combine: (Double, Double) -> Double) -> ObjectiveMetrics {
        var result = self
        for (_, keyPath) in Self.fields { result[keyPath: keyPath] = combine(self[keyPath: keyPath], other[keyPath: keyPath]) }
        for name in Set(extra.keys).union(other.extra.keys) {
            result.extra[name] = combine(extra[name] ?? 0, other.extra[name] ?? 0)
        }
        return result
    }

    /// Writes the metrics under TRL's names, each after `prefix` (transformers prefixes eval metrics `eval_`).
    func encode(to container: inout KeyedEncodingContainer<MetricKey>, prefix: String) throws {
        for (name, keyPath) in Self.fields { try container.encode(self[keyPath: keyPath], forKey: MetricKey(prefix + name)) }
        for (name, value) in extra { try container.encode(value, forKey: MetricKey(prefix + name)) }
    }

    init(from container: KeyedDecodingContainer<MetricKey>, prefix: String) throws {
        self = .zero
        for (name, keyPath) in Self.fields { self[keyPath: keyPath] = try container.decode(Double.self, forKey: MetricKey(prefix + name)) }
        for name in Self.extraNames {
            if let value = try container.decodeIfPresent(Double.self, forKey: MetricKey(prefix + name)) { extra[name] = value }
        }
    }
}

extension ObjectiveMetrics: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(from: decoder.container(keyedBy: MetricKey.self), prefix: "")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: MetricKey.self)
        try encode(to: &container, prefix: "")
    }
}

/// One optimiser step's metrics, as transformers logs them: the objective's (averaged over the step's
/// micro-batches) and the step's own.
public struct StepMetrics: Sendable, Equatable {
    public var objective: ObjectiveMetrics
    /// The global gradient norm before clipping.
    public var gradNorm: Double
    /// The rate after this step (transformers logs it after the scheduler has stepped: the next step's rate).
    public var learningRate: Double
    /// 1-based.
    public var step: Int
    /// Fractional epochs done after this step.
    public var epoch: Double
    /// Tokens (prompt and completions, padding excluded) through the policy per second in this step.
    public var tokensPerSecond: Double
    /// The run's remaining time at the pace of the steps so far.
    public var etaSeconds: Double
    /// The processes that shared the step's batch; written as `world_size` only when more than one, so a
    /// one-process file keeps TRL's keys.
    public var worldSize: Int

    public init(objective: ObjectiveMetrics, gradNorm: Double, learningRate: Double, step: Int, epoch: Double,
                tokensPerSecond: Double, etaSeconds: Double, worldSize: Int = 1) {
        self.objective = objective
        self.gradNorm = gradNorm
        self.learningRate = learningRate
        self.step = step
        self.epoch = epoch
        self.tokensPerSecond = tokensPerSecond
        self.etaSeconds = etaSeconds
        self.worldSize = worldSize
    }
}

extension StepMetrics: Codable {
    enum CodingKeys: String, CodingKey {
        case gradNorm = "grad_norm", learningRate = "learning_rate", step, epoch
        case tokensPerSecond = "tokens_per_second", etaSeconds = "eta_seconds", worldSize = "world_size"
    }

    /// One flat object, the objective's metrics beside the step's, as in TRL's `log_history`.
    public init(from decoder: any Decoder) throws {
        objective = try ObjectiveMetrics(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        gradNorm = try container.decode(Double.self, forKey: .gradNorm)
        learningRate = try container.decode(Double.self, forKey: .learningRate)
        step = try container.decode(Int.self, forKey: .step)
        epoch = try container.decode(Double.self, forKey: .epoch)
        tokensPerSecond = try container.decode(Double.self, forKey: .tokensPerSecond)
        etaSeconds = try container.decode(Double.self, forKey: .etaSeconds)
        worldSize = try container.decodeIfPresent(Int.self, forKey: .worldSize) ?? 1
    }

    public func encode(to encoder: any Encoder) throws {
        try objective.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(gradNorm, forKey: .gradNorm)
        try container.encode(learningRate, forKey: .learningRate)
        try container.encode(step, forKey: .step)
        try container.encode(epoch, forKey: .epoch)
        try container.encode(tokensPerSecond, forKey: .tokensPerSecond)
        try container.encode(etaSeconds, forKey: .etaSeconds)
        if worldSize > 1 { try container.encode(worldSize, forKey: .worldSize) }
    }
}

/// The objective's metrics on the eval data after a step, written `eval_`-prefixed beside `step`, as transformers
/// logs them.
public struct EvalMetrics: Sendable, Equatable {
    public var objective: ObjectiveMetrics
    /// The optimiser step after which the evaluation ran (1-based).
    public var step: Int
    /// The processes that shared the evaluation (`world_size`, written only when more than one).
    public var worldSize: Int

    public init(objective: ObjectiveMetrics, step: Int, worldSize: Int = 1) {
        self.objective = objective
        self.step = step
        self.worldSize = worldSize
    }

    static let prefix = "eval_"
}

extension EvalMetrics: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: MetricKey.self)
        objective = try ObjectiveMetrics(from: container, prefix: Self.prefix)
        step = try container.decode(Int.self, forKey: MetricKey("step"))
        worldSize = try container.decodeIfPresent(Int.self, forKey: MetricKey("world_size")) ?? 1
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: MetricKey.self)
        try objective.encode(to: &container, prefix: Self.prefix)
        try container.encode(step, forKey: MetricKey("step"))
        if worldSize > 1 { try container.encode(worldSize, forKey: MetricKey("world_size")) }
    }
}

/// A line of `metrics.jsonl`: the step it belongs to and its values under TRL's names, as TensorBoard logs them too.
public protocol LoggedMetrics: Codable, Sendable {
    /// The optimiser step (1-based).
    var step: Int { get }
    /// Every value under the name `metrics.jsonl` gives it, `step` excepted.
    var namedValues: [(name: String, value: Double)] { get }
}

extension ObjectiveMetrics {
    /// The values under TRL's names, each after `prefix`.
    func namedValues(prefix: String) -> [(name: String, value: Double)] {
        Self.fields.map { (prefix + $0.name, self[keyPath: $0.keyPath]) }
            + extra.sorted { $0.key < $1.key }.map { (prefix + $0.key, $0.value) }
    }
}

extension StepMetrics: LoggedMetrics {
    public var namedValues: [(name: String, value: Double)] {
        objective.namedValues(prefix: "") + [
            (CodingKeys.gradNorm.stringValue, gradNorm), (CodingKeys.learningRate.stringValue, learningRate),
            (CodingKeys.epoch.stringValue, epoch), (CodingKeys.tokensPerSecond.stringValue, tokensPerSecond),
            (CodingKeys.etaSeconds.stringValue, etaSeconds),
        ]
    }
}

extension EvalMetrics: LoggedMetrics {
    public var namedValues: [(name: String, value: Double)] { objective.namedValues(prefix: Self.prefix) }
}

/// A metric's key in a metrics file.
struct MetricKey: CodingKey {
    var stringValue: String
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    var intValue: Int? { nil }
    init?(intValue: Int) { nil }
}
