import Foundation
import ONNXGraph

/// How the next token is chosen from one row of next-token logits: transformers' logits processors, applied in the
/// order `GenerationMixin._get_logits_processor` appends them (transformers 5.24 `generation/utils.py`): repetition
/// penalty, then (sampling only) temperature, top-k, top-p, min-p; then the argmax (greedy) or a draw from the
/// softmax (sampling). A removed token's score is `-inf`, as transformers' `filter_value`.
public struct SamplingOptions: Sendable, Equatable {
    /// Draw from the distribution (transformers' `do_sample=True`); false is greedy (argmax, first index on ties,
    /// as `torch.argmax`).
    public var sample: Bool
    /// Scores divided by it (`TemperatureLogitsWarper`); 1 leaves them.
    public var temperature: Float
    /// Keep the k highest scores and every score equal to the k-th (`TopKLogitsWarper`); 0 keeps all.
    public var topK: Int
    /// Keep the smallest set of highest-probability tokens whose probabilities sum to more than `topP`
    /// (`TopPLogitsWarper`: sorted ascending, drop while the cumulative probability is ≤ 1 − topP, always keep the
    /// last); 1 keeps all.
    public var topP: Float
    /// Drop tokens whose probability is below `minP` times the top probability (`MinPLogitsWarper`); nil is off.
    public var minP: Float?
    /// Every token already in the row (prompt and generated) gets its score divided by the penalty when positive,
    /// multiplied when negative (`RepetitionPenaltyLogitsProcessor`, Keskar et al. 2019, CTRL); 1 is off. Applies
    /// to greedy decoding too, as in transformers.
    public var repetitionPenalty: Float

    /// Greedy decoding, optionally with a repetition penalty.
    public static func greedy(repetitionPenalty: Float = 1) -> SamplingOptions {
        SamplingOptions(sample: false, temperature: 1, topK: 0, topP: 1, minP: nil, repetitionPenalty: repetitionPenalty)
    }

    /// Sampling; the defaults are transformers' `GenerationConfig` defaults (temperature 1, top-k 50, top-p 1).
    public static func sampling(temperature: Float = 1, topK: Int = 50, topP: Float = 1, minP: Float? = nil,
                                repetitionPenalty: Float = 1) -> SamplingOptions {
        SamplingOptions(sample: true, temperature: temperature, topK: topK, topP: topP, minP: minP,
                        repetitionPenalty: repetitionPenalty)
    }

    public init(sample: Bool, temperature: Float, topK: Int, topP: Float, minP: Float?, repetitionPenalty: Float) {
        self.sample = sample
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
    }

    /// Throws `TrainingError.invalidOption` naming the first setting out of range.
    public func validate() throws(TrainingError) {
        guard temperature > 0, temperature.isFinite else { throw .invalidOption(option: "temperature", reason: "must be > 0, got \(temperature)") }
        guard topK >= 0 else { throw .invalidOption(option: "topK", reason: "must be ≥ 0 (0 keeps every token), got \(topK)") }
        guard topP > 0, topP <= 1 else { throw .invalidOption(option: "topP", reason: "must be in (0, 1], got \(topP)") }
        if let minP, !(minP >= 0 && minP <= 1) { throw .invalidOption(option: "minP", reason: "must be in [0, 1], got \(minP)") }
        guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
            throw .invalidOption(option: "repetitionPenalty", reason: "must be > 0 (1 is off), got \(repetitionPenalty)")
        }
    }

    /// The processed scores of one row: every processor that is on, in transformers' order. `previous` is the row's
    /// tokens so far (prompt, then generated).
    public func process(_ scores: [Float], previous: [Int]) -> [Float] {
        var scores = scores
        if repetitionPenalty != 1 { Self.penalizeRepetitions(&scores, previous: previous, penalty: repetitionPenalty) }
        guard sample else { return scores }
        if temperature != 1 { Self.divideByTemperature(&scores, temperature) }
        if topK != 0 { Self.keepTopK(&scores, topK) }
        if topP < 1 { Self.keepTopP(&scores, topP) }
        if let minP { Self.keepMinP(&scores, minP) }
        return scores
    }

    /// The next token of one row: `process`, then the argmax, or a draw from `softmax(scores)` with `generator`
    /// (one uniform draw in [0, 1), then the first token whose cumulative probability exceeds it).
    public func choose(_ scores: [Float], previous: [Int], generator: inout SeededGenerator) -> Int {
        let processed = process(scores, previous: previous)
        guard sample else { return Self.argmax(processed) }
        let probabilities = Self.softmax(processed)
        let draw = Double.random(in: 0..<1, using: &generator)
        var cumulative = 0.0
        for (token, probability) in probabilities.enumerated() where probability > 0 {
            cumulative += probability
            if draw < cumulative { return token }
        }
        return probabilities.lastIndex(where: { $0 > 0 }) ?? Self.argmax(processed)
    }

    /// The first index of the largest score (NaN never wins).
    public static func argmax(_ scores: [Float]) -> Int {
        var best = 0
        for index in scores.indices where scores[index] > scores[best] || scores[best].isNaN { best = index }
        return best
    }

    /// `softmax(scores)` in Double; `-inf` scores get probability 0.
    public static func softmax(_ scores: [Float]) -> [Double] {
        let top = Double(scores.max() ?? 0)
        let exps = scores.map { exp(Double($0) - top) }
        let total = exps.reduce(0, +)
        return exps.map { $0 / total }
    }

    /// `RepetitionPenaltyLogitsProcessor`: score / penalty where > 0, score · penalty where < 0, once per distinct
    /// token of `previous`.
    public static func penalizeRepetitions(_ scores: inout [Float], previous: [Int], penalty: Float) {
        for token in Set(previous) where scores.indices.contains(token) {
            let score = scores[token]
            scores[token] = score < 0 ? score * penalty : score / penalty
        }
    }

    /// `TemperatureLogitsWarper`: scores / temperature.
    public static func divideByTemperature(_ scores: inout [Float], _ temperature: Float) {
        for index in scores.indices { scores[index] /= temperature }
    }

    /// `TopKLogitsWarper`: `-inf` for every score below the k-th largest (ties with it are kept).
    public static func keepTopK(_ scores: inout [Float], _ k: Int) {
        let k = min(max(k, 1), scores.count)
        let threshold = scores.sorted(by: >)[k - 1]
        for index in scores.indices where scores[index] < threshold { scores[index] = -.infinity }
    }

    /// `TopPLogitsWarper`: sort ascending (stable, as torch.sort on CPU), drop tokens while the cumulative softmax is
    /// ≤ 1 − topP, always keeping the largest.
    public static func keepTopP(_ scores: inout [Float], _ topP: Float) {
        let order = scores.indices.sorted { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        let probabilities = softmax(order.map { scores[$0] }).map(Float.init)
        var cumulative: Float = 0
        for (rank, index) in order.enumerated() {
            cumulative += probabilities[rank]
            if cumulative <= 1 - topP && rank < order.count - 1 { scores[index] = -.infinity }
        }
    }

    /// `MinPLogitsWarper`: `-inf` where `softmax(scores) < minP · max(softmax(scores))`, keeping the top token.
    public static func keepMinP(_ scores: inout [Float], _ minP: Float) {
        let probabilities = softmax(scores)
        let top = probabilities.max() ?? 0
        let best = argmax(scores)
        for index in scores.indices where index != best && probabilities[index] < Double(minP) * top {
            scores[index] = -.infinity
        }
    }
}
