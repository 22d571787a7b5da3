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
        /// The mean of the token's logits row over the vocabulary.
        public var meanLogit: Float = 0
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
            throw TrainingError.invalidTrainingState(reason: "logits must be [sequences, tokens, vocabulary], got \(logits)")
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
            throw TrainingError.invalidTrainingState(reason: "logits must be a float tensor, got \(logits)")
        }
        guard inputIDs.count == sequences * length, completionMask.count == sequences * length else {
            throw TrainingError.invalidTrainingState(reason: "ids and mask must be [\(sequences), \(length)]")
        }
        var tokens: [Token] = []
        for sequence in 0..<sequences {
            for position in 1..<max(length, 1) where completionMask[sequence * length + position] {
                let id = Int(inputIDs[sequence * length + position])
                guard id >= 0, id < vocabulary else {
                    throw TrainingError.invalidTrainingState(reason: "token id \(id) is outside the vocabulary of \(vocabulary)")
                }
                let row = compact ? tokens.count : sequence * length + position - 1
                guard (row + 1) * vocabulary <= values.count else {
                    throw TrainingError.invalidTrainingState(reason: "the logits have fewer rows than the completion tokens")
                }
                tokens.append(Token(sequence: sequence, position: position, row: row, logProbability: 0))
            }
        }
        // Each token's row statistics, in parallel over tokens (each reads its own row).
        var statistics = [(logSumExp: Float, mean: Float)](repeating: (0, 0), count: tokens.count)
        values.withUnsafeBufferPointer { logits in
            statistics.withUnsafeMutableBufferPointer { results in
                let (base, target) = (logits.baseAddress!, results.baseAddress!)
                let rows = tokens.map(\.row)
                Parallel.forEachChunk(rows.count, minimumPerThread: max(1, 65_536 / vocabulary)) { range in
                    for index in range { target[index] = rowStatistics(base + rows[index] * vocabulary, vocabulary) }
                }
            }
        }
        var sums = [Double](repeating: 0, count: sequences)
        var counts = [Int](repeating: 0, count: sequences)
        var meanLogits = [Double](repeating: 0, count: sequences)
        for index in tokens.indices {
            let token = tokens[index]
            let id = Int(inputIDs[token.sequence * length + token.position])
            let logProbability = values[token.row * vocabulary + id] - statistics[index].logSumExp
            tokens[index].logProbability = logProbability
            tokens[index].meanLogit = statistics[index].mean
            sums[token.sequence] += Double(logProbability)
            counts[token.sequence] += 1
            meanLogits[token.sequence] += Double(statistics[index].mean)
        }
        self.sums = sums
        self.counts = counts
        self.tokens = tokens
        self.meanLogitSums = meanLogits
    }

    /// These log-probabilities restricted to the tokens `mask` marks (`[S, T]`, a subset of the scored ones), and the
    /// sums over the other scored tokens: ORPO scores the chosen prompts too, and reads its completions apart.
    public func restricted(to mask: [Bool], length: Int) -> (kept: SequenceLogProbs, otherSums: [Double]) {
        var kept = self
        kept.tokens = tokens.filter { mask[$0.sequence * length + $0.position] }
        kept.sums = [Double](repeating: 0, count: sums.count)
        kept.counts = [Int](repeating: 0, count: sums.count)
        kept.meanLogitSums = [Double](repeating: 0, count: sums.count)
        var otherSums = [Double](repeating: 0, count: sums.count)
        for token in tokens {
            guard mask[token.sequence * length + token.position] else {
                otherSums[token.sequence] += Double(token.logProbability)
                continue
            }
            kept.sums[token.sequence] += Double(token.logProbability)
            kept.counts[token.sequence] += 1
            kept.meanLogitSums[token.sequence] += Double(token.meanLogit)
        }
        return (kept, otherSums)
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
        let weights = tokens.map { tokenWeight($0.sequence, $0.position) }
        values.withUnsafeBufferPointer { source in
            gradient.withUnsafeMutableBufferPointer { target in
                let (input, output) = (source.baseAddress!, target.baseAddress!)
                // Tokens own disjoint rows, so they can be written in parallel.
                Parallel.forEachChunk(tokens.count, minimumPerThread: max(1, 65_536 / vocabulary)) { range in
                    for index in range where weights[index] != 0 {
                        let token = tokens[index], weight = weights[index]
                        let row = token.row * vocabulary
                        let maximum = VectorKernels.maximum(input + row, vocabulary)
                        let logSumExp = maximum + log(VectorKernels.exponentialSum(input + row, vocabulary, shift: maximum))
                        // softmax = exp(z − max) · exp(max − logSumExp), written in one pass.
                        let scale = weight * fastExp(maximum - logSumExp)
                        VectorKernels.scaledExponentials(input + row, vocabulary, shift: maximum, scale: -scale,
                                                         into: output + row)
                        output[row + Int(inputIDs[token.sequence * length + token.position])] += weight
                    }
                }
            }
        }
        return Tensor(shape: logits.shape, floats: gradient, dataType: logits.dataType)
    }
}

/// `(log Σ exp(row), mean(row))` of a logits row, stable (the maximum subtracted first). Float arithmetic, as TRL's
/// float32, in the C kernels at the CPU's vector width (`VectorKernels`: `fastExp`'s exponential, 32 partial sums).
@inline(__always)
private func rowStatistics(_ row: UnsafePointer<Float>, _ count: Int) -> (logSumExp: Float, mean: Float) {
    let maximum = VectorKernels.maximum(row, count)
    let sum = VectorKernels.exponentialSum(row, count, shift: maximum)
    return (maximum + log(sum), VectorKernels.sum(row, count) / Float(count))
}
