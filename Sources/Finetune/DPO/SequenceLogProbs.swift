import Foundation
import Interpreter
import ONNXGraph

/// Completion log-probabilities from a causal LM's logits, as TRL computes them: the log-probability of token
/// `t` is `log_softmax(logits[t − 1])[ids[t]]`, counted where `completionMask[t] = 1` (t ≥ 1; TRL's
/// `completion_mask[..., 1:]`), and a sequence's log-probability is their sum.
///
/// Shapes: logits `[S, T, V]` for S sequences (chosen rows then rejected rows), ids and mask `[S, T]`.
public struct SequenceLogProbs: Sendable {
    /// Σ_t log p(ids[t]) over each sequence's completion tokens, `[S]`.
    public var sums: [Double]
    /// Completion tokens per sequence, `[S]`.
    public var counts: [Int]
    /// Per scored token (row-major over `[S, T]`, only masked positions): `(sequence, position, log p)`.
    public var tokens: [(sequence: Int, position: Int, logProbability: Float)]
    /// Σ over completion tokens of the mean logit over the vocabulary (TRL's `logits/chosen` numerator), `[S]`.
    public var meanLogitSums: [Double]

    /// Computes the statistics from `logits`, in parallel over sequences.
    public init(logits: Tensor, inputIDs: [Int64], completionMask: [Bool]) throws {
        guard logits.rank == 3, case .float(let values) = logits.storage else {
            throw FinetuneError.invalidTrainingState(reason: "logits must be a float [sequences, tokens, vocabulary] tensor, got \(logits)")
        }
        let (sequences, length, vocabulary) = (logits.shape[0], logits.shape[1], logits.shape[2])
        guard inputIDs.count == sequences * length, completionMask.count == sequences * length else {
            throw FinetuneError.invalidTrainingState(reason: "ids and mask must be [\(sequences), \(length)]")
        }
        var sums = [Double](repeating: 0, count: sequences)
        var counts = [Int](repeating: 0, count: sequences)
        var meanLogits = [Double](repeating: 0, count: sequences)
        var perToken = [[(Int, Int, Float)]](repeating: [], count: sequences)
        for sequence in 0..<sequences {
            for position in 1..<max(length, 1) where completionMask[sequence * length + position] {
                let id = Int(inputIDs[sequence * length + position])
                guard id >= 0, id < vocabulary else {
                    throw FinetuneError.invalidTrainingState(reason: "token id \(id) is outside the vocabulary of \(vocabulary)")
                }
                let row = (sequence * length + position - 1) * vocabulary
                let (logSumExp, mean) = values.withUnsafeBufferPointer { rowStatistics($0.baseAddress! + row, vocabulary) }
                let logProbability = values[row + id] - logSumExp
                sums[sequence] += Double(logProbability)
                counts[sequence] += 1
                meanLogits[sequence] += Double(mean)
                perToken[sequence].append((sequence, position, logProbability))
            }
        }
        self.sums = sums
        self.counts = counts
        self.tokens = perToken.flatMap { $0 }.map { (sequence: $0.0, position: $0.1, logProbability: $0.2) }
        self.meanLogitSums = meanLogits
    }

    /// `dLoss/dLogits` for a loss whose derivative with respect to each scored token's log-probability is
    /// `tokenWeight(sequence, position)`: `d log p(y | z) / dz = onehot(y) − softmax(z)` at row `position − 1`;
    /// rows that score nothing get zero.
    public static func logitsGradient(
        logits: Tensor, inputIDs: [Int64], tokens: [(sequence: Int, position: Int, logProbability: Float)],
        tokenWeight: (Int, Int) -> Float
    ) -> Tensor {
        let (length, vocabulary) = (logits.shape[1], logits.shape[2])
        let values = logits.floats
        var gradient = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { source in
            gradient.withUnsafeMutableBufferPointer { target in
                for token in tokens {
                    let weight = tokenWeight(token.sequence, token.position)
                    if weight == 0 { continue }
                    let row = (token.sequence * length + token.position - 1) * vocabulary
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
