import Foundation
import Interpreter
import ONNXGraph

/// Completion log-probabilities from a causal LM's logits, as TRL computes them: the log-probability of token
/// `t` is `log_softmax(logits[t − 1])[ids[t]]`, counted where `completionMask[t] = 1` (t ≥ 1; TRL's
/// `completion_mask[..., 1:]`), and a sequence's log-probability is their sum.
///
/// Shapes: logits `[S, T, V]` for S sequences (chosen rows then rejected rows), ids and mask `[S, T]`.
public struct SequenceLogProbs: Sendable {
    /// A scored token: its sequence, its position, the logits row it is scored from, and its log-probability.
    public struct Token: Sendable {
        public var sequence: Int
        public var position: Int
        public var row: Int
        public var logProbability: Float
    }

    /// Σ_t log p(ids[t]) over each sequence's completion tokens, `[S]`.
    public var sums: [Double]
    /// Completion tokens per sequence, `[S]`.
    public var counts: [Int]
    /// The scored tokens, in row-major order over `[S, T]`.
    public var tokens: [Token]
    /// Σ over completion tokens of the mean logit over the vocabulary (TRL's `logits/chosen` numerator), `[S]`.
    public var meanLogitSums: [Double]

    /// The flat indices `s·T + t − 1` of the logits rows that score completion tokens, in row-major order: the
    /// rows `ScoredPositions` makes a model compute.
    public static func scoredRows(completionMask: [Bool], sequences: Int, length: Int) -> [Int64] {
        var rows: [Int64] = []
        for sequence in 0..<sequences {
            for position in 1..<max(length, 1) where completionMask[sequence * length + position] {
                rows.append(Int64(sequence * length + position - 1))
            }
        }
        return rows
    }

    /// From full logits `[S, T, V]`.
    public init(logits: Tensor, inputIDs: [Int64], completionMask: [Bool]) throws {
        guard logits.rank == 3 else {
            throw FinetuneError.invalidTrainingState(reason: "logits must be [sequences, tokens, vocabulary], got \(logits)")
        }
        try self.init(logits: logits, sequences: logits.shape[0], length: logits.shape[1], inputIDs: inputIDs,
                      completionMask: completionMask, compact: false)
    }

    /// From the logits of the scored rows only, `[N, V]` in `scoredRows` order (a `ScoredPositions` model).
    public init(scoredLogits: Tensor, sequences: Int, length: Int, inputIDs: [Int64], completionMask: [Bool]) throws {
        try self.init(logits: scoredLogits, sequences: sequences, length: length, inputIDs: inputIDs,
                      completionMask: completionMask, compact: true)
    }

    private init(logits: Tensor, sequences: Int, length: Int, inputIDs: [Int64], completionMask: [Bool], compact: Bool) throws {
        guard case .float(let values) = logits.storage, let vocabulary = logits.shape.last, vocabulary > 0 else {
            throw FinetuneError.invalidTrainingState(reason: "logits must be a float tensor, got \(logits)")
        }
        guard inputIDs.count == sequences * length, completionMask.count == sequences * length else {
            throw FinetuneError.invalidTrainingState(reason: "ids and mask must be [\(sequences), \(length)]")
        }
        var sums = [Double](repeating: 0, count: sequences)
        var counts = [Int](repeating: 0, count: sequences)
        var meanLogits = [Double](repeating: 0, count: sequences)
        var tokens: [Token] = []
        for sequence in 0..<sequences {
            for position in 1..<max(length, 1) where completionMask[sequence * length + position] {
                let id = Int(inputIDs[sequence * length + position])
                guard id >= 0, id < vocabulary else {
                    throw FinetuneError.invalidTrainingState(reason: "token id \(id) is outside the vocabulary of \(vocabulary)")
                }
                let row = compact ? tokens.count : sequence * length + position - 1
                guard (row + 1) * vocabulary <= values.count else {
                    throw FinetuneError.invalidTrainingState(reason: "the logits have fewer rows than the completion tokens")
                }
                let (logSumExp, mean) = values.withUnsafeBufferPointer { rowStatistics($0.baseAddress! + row * vocabulary, vocabulary) }
                let logProbability = values[row * vocabulary + id] - logSumExp
                sums[sequence] += Double(logProbability)
                counts[sequence] += 1
                meanLogits[sequence] += Double(mean)
                tokens.append(Token(sequence: sequence, position: position, row: row, logProbability: logProbability))
            }
        }
        self.sums = sums
        self.counts = counts
        self.tokens = tokens
        self.meanLogitSums = meanLogits
    }

    /// `dLoss/dLogits` (shaped like `logits`, full or scored rows) for a loss whose derivative with respect to each
    /// scored token's log-probability is `tokenWeight(sequence, position)`: `d log p(y | z) / dz = onehot(y) −
    /// softmax(z)` on the token's row; rows that score nothing get zero.
    public static func logitsGradient(
        logits: Tensor, inputIDs: [Int64], tokens: [Token], length: Int, tokenWeight: (Int, Int) -> Float
    ) -> Tensor {
        let vocabulary = logits.shape.last!
        let values = logits.floats
        var gradient = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { source in
            gradient.withUnsafeMutableBufferPointer { target in
                for token in tokens {
                    let weight = tokenWeight(token.sequence, token.position)
                    if weight == 0 { continue }
                    let row = token.row * vocabulary
                    let (logSumExp, _) = rowStatistics(source.baseAddress! + row, vocabulary)
                    for v in 0..<vocabulary {
                        target[row + v] -= weight * Foundation.exp(source[row + v] - logSumExp)
                    }
                    target[row + Int(inputIDs[token.sequence * length + token.position])] += weight
                }
            }
        }
        return Tensor(shape: logits.shape, floats: gradient, dataType: logits.dataType)
    }
}

/// `(log Σ exp(row), mean(row))` of a logits row, stable (max subtracted), accumulated in Double.
private func rowStatistics(_ row: UnsafePointer<Float>, _ count: Int) -> (Float, Float) {
    var maximum = -Float.infinity
    var total = 0.0
    for v in 0..<count {
        maximum = max(maximum, row[v])
        total += Double(row[v])
    }
    var sum = 0.0
    for v in 0..<count { sum += Foundation.exp(Double(row[v] - maximum)) }
    return (maximum + Float(Foundation.log(sum)), Float(total / Double(count)))
}
