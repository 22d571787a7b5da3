import Foundation
import Interpreter
import ONNXGraph

/// Log-probabilities of token continuations under a causal LM: for each row, the sum and count of
/// `log p(token | every token before it)` over the continuation's tokens. Rows run in right-padded batches (the
/// padding GroupQueryAttention graphs need), positions count from 0 on every row, KV-cache inputs are fed empty.
///
/// The judges score with it: a completion's mean token log-prob (`--by confidence`), and a judge model's
/// probability of answering "1" or "2" (`--by judge-model`).
public struct ContinuationScorer {
    /// One row: the ids the model reads first, then the ids whose log-probabilities are summed.
    public struct Row: Sendable, Equatable {
        public var context: [Int]
        public var continuation: [Int]

        public init(context: [Int], continuation: [Int]) {
            self.context = context
            self.continuation = continuation
        }
    }

    /// A row's score.
    public struct Score: Sendable, Equatable {
        /// Σ log p over the continuation's tokens.
        public var sum: Double
        /// How many tokens were summed.
        public var count: Int
        /// The mean token log-probability (0 for an empty continuation).
        public var mean: Double { count > 0 ? sum / Double(count) : 0 }
    }

    public let session: Session
    /// The output holding the logits.
    public let logitsOutput: String
    /// Rows per forward pass.
    public var batchSize: Int
    let padTokenID: Int
    let kvCache: KVCacheInputs

    /// A scorer on `session` (a model, adapters applied or not); `padTokenID` fills the right padding, which the
    /// attention mask hides.
    public init(session: Session, logitsOutput: String? = nil, padTokenID: Int, batchSize: Int = 4) throws {
        guard batchSize >= 1 else { throw TrainingError.invalidOption(option: "batchSize", reason: "must be at least 1, got \(batchSize)") }
        self.session = session
        self.logitsOutput = try LogitsOutput.find(in: session.model, named: logitsOutput)
        self.padTokenID = padTokenID
        self.batchSize = batchSize
        kvCache = try KVCacheInputs(model: session.model)
    }

    /// Each row's score, in order. A row whose context is empty cannot score its first token (nothing predicts it):
    /// that token is then left out of the sum and the count, as in training.
    public func score(_ rows: [Row]) throws -> [Score] {
        var scores: [Score] = []
        scores.reserveCapacity(rows.count)
        for start in stride(from: 0, to: rows.count, by: batchSize) {
            let batch = Array(rows[start..<min(start + batchSize, rows.count)])
            let length = batch.map { $0.context.count + $0.continuation.count }.max() ?? 0
            guard length > 0 else {
                scores += batch.map { _ in Score(sum: 0, count: 0) }
                continue
            }
            var ids = [Int64](repeating: Int64(padTokenID), count: batch.count * length)
            var mask = [Int64](repeating: 0, count: batch.count * length)
            var scored = [Bool](repeating: false, count: batch.count * length)
            for (index, row) in batch.enumerated() {
                let tokens = row.context + row.continuation
                for (position, id) in tokens.enumerated() {
                    ids[index * length + position] = Int64(id)
                    mask[index * length + position] = 1
                    scored[index * length + position] = position >= row.context.count
                }
            }
            var feeds = ["input_ids": Tensor(shape: [batch.count, length], int64s: ids),
                         "attention_mask": Tensor(shape: [batch.count, length], int64s: mask)]
            feeds.merge(kvCache.emptyFeeds(batch: batch.count)) { a, _ in a }
            if session.inputs.contains(where: { $0.name == "position_ids" }) {
                feeds["position_ids"] = Tensor(shape: [batch.count, length],
                                               int64s: (0..<(batch.count * length)).map { Int64($0 % length) })
            }
            guard let logits = try session.run(feeds, outputNames: [logitsOutput])[logitsOutput] else {
                throw TrainingError.invalidTrainingState(reason: "the session did not return the logits output '\(logitsOutput)'")
            }
            let logProbs = try SequenceLogProbs(logits: logits, inputIDs: ids, completionMask: scored)
            scores += zip(logProbs.sums, logProbs.counts).map { Score(sum: $0, count: $1) }
        }
        return scores
    }
}
