import Foundation
import Interpreter
import ONNXGraph

/// Token-level DPO (Zeng et al., "Token-level Direct Preference Optimization", ICML 2024, arXiv 2404.11999), the
/// paper's TDPO1 and TDPO2. Besides the log-ratios of DPO it reads the sequential KL divergence of the reference's
/// next-token distribution from the policy's, summed over a completion's tokens:
///
///     D(y) = Σ_t KL(π_ref(·|x, y<t) ‖ π_θ(·|x, y<t))          (over the whole vocabulary at every completion token)
///     m(y) = Σ_t log π_θ(y_t|…) − log π_ref(y_t|…)           (DPO's log-ratio)
///     u    = m(yc) − m(yr) − (D(yr) − D(yc))                  TDPO1
///     u    = m(yc) − m(yr) − α·(D(yr) − sg(D(yc)))            TDPO2 (sg: no gradient through the chosen KL)
///     loss = −log σ(β·u), averaged over the pairs; rewards β·(m + D)
///
/// With `z` a policy logits row, `p = softmax(z)` and `q` the reference's distribution, `d log p(y)/dz = onehot(y) − p`
/// and `d KL(q ‖ p)/dz = p − q`, so the gradient of a completion row is `g·(onehot(y) − p) + k·(p − q)` with
/// `g = dLoss/dm` and `k = dLoss/dD` of its sequence.
public enum TDPO {
    /// A batch's TDPO loss, metrics, and `dLoss/dPolicyLogits` (shaped like `policyLogits`).
    ///
    /// `policyLogits` and `referenceLogits` are the same rows (full `[S, T, V]` or the scored `[N, V]`) of the policy
    /// and of the reference (adapters off); `policy` and `reference` their `SequenceLogProbs` (the same tokens).
    public static func evaluate(
        _ objective: DPOObjective, policyLogits: Tensor, referenceLogits: Tensor, policy: SequenceLogProbs,
        reference: SequenceLogProbs, inputIDs: [Int64], length: Int, totals: BatchTotals? = nil
    ) throws -> (evaluation: DPOObjective.Evaluation, dLogits: Tensor) {
        guard let type = objective.terms.first(where: { $0.type.isTokenLevel }) else {
            throw TrainingError.invalidTrainingState(reason: "TDPO.evaluate needs a tdpo1 or tdpo2 objective")
        }
        guard policyLogits.shape == referenceLogits.shape, policy.tokens.count == reference.tokens.count,
              policy.sums.count == reference.sums.count, policy.sums.count % 2 == 0, !policy.sums.isEmpty else {
            throw TrainingError.invalidTrainingState(
                reason: "policy and reference logits differ: \(policyLogits.shape) against \(referenceLogits.shape)")
        }
        let vocabulary = policyLogits.shape.last!
        let policyValues = policyLogits.floats, referenceValues = referenceLogits.floats
        let tokens = policy.tokens
        let sequences = policy.sums.count, pairs = sequences / 2
        let totals = totals ?? BatchTotals(policy)
        let n = Double(totals.pairs), beta = objective.beta
        let weight = type.weight

        // KL(q ‖ p) at every scored row.
        var divergences = [Double](repeating: 0, count: tokens.count)
        forEachToken(tokens, policyValues, referenceValues, vocabulary: vocabulary, results: &divergences, stride: 1) {
            index, p, q, result in
            result[0] = divergence(reference: q, policy: p, vocabulary)
        }
        var kl = [Double](repeating: 0, count: sequences)
        for (index, token) in tokens.enumerated() { kl[token.sequence] += divergences[index] }
        let margins = zip(policy.sums, reference.sums).map { $0 - $1 }

        var loss = 0.0
        var dMargin = [Double](repeating: 0, count: sequences), dDivergence = [Double](repeating: 0, count: sequences)
        let tdpo2 = type.type == .tdpo2
        let alpha = tdpo2 ? objective.tdpoAlpha : 1
        for i in 0..<pairs {
            let u = margins[i] - margins[pairs + i] - alpha * (kl[pairs + i] - kl[i])
            loss += -weight * logSigmoid(beta * u) / n
            let slope = -weight * beta * sigmoid(-beta * u) / n
            dMargin[i] = slope
            dMargin[pairs + i] = -slope
            dDivergence[pairs + i] = -alpha * slope
            dDivergence[i] = tdpo2 ? 0 : slope
        }

        // g·(onehot(y) − p) + k·(p − q) on every completion row.
        var gradient = [Float](repeating: 0, count: policyValues.count)
        forEachToken(tokens, policyValues, referenceValues, vocabulary: vocabulary, results: &gradient, stride: vocabulary) {
            index, p, q, out in
            let token = tokens[index]
            let g = dMargin[token.sequence], k = dDivergence[token.sequence]
            let (policyMaximum, policyLogSum) = logSumExp(p, vocabulary)
            let (referenceMaximum, referenceLogSum) = logSumExp(q, vocabulary)
            for v in 0..<vocabulary {
                let policyProbability = exp(Double(p[v]) - policyMaximum - policyLogSum)
                let referenceProbability = exp(Double(q[v]) - referenceMaximum - referenceLogSum)
                out[v] = Float(-g * policyProbability + k * (policyProbability - referenceProbability))
            }
            out[Int(inputIDs[token.sequence * length + token.position])] += Float(g)
        }

        func mean(_ values: some Sequence<Double>) -> Double { values.reduce(0, +) / n }
        let metrics = ObjectiveMetrics(
            loss: loss, chosenRewards: (0..<pairs).map { beta * (margins[$0] + kl[$0]) },
            rejectedRewards: (0..<pairs).map { beta * (margins[pairs + $0] + kl[pairs + $0]) },
            chosenLogps: policy.sums[0..<pairs], rejectedLogps: policy.sums[pairs...], policy: policy, totals: totals,
            extra: ["kl/chosen": mean(kl[0..<pairs]), "kl/rejected": mean(kl[pairs...]),
                    "kl/margin": mean((0..<pairs).map { kl[$0] - kl[pairs + $0] })])
        let evaluation = DPOObjective.Evaluation(
            loss: loss, metrics: metrics, chosenSequenceGradients: Array(dMargin[0..<pairs]),
            rejectedSequenceGradients: Array(dMargin[pairs...]), chosenTokenGradient: 0)
        return (evaluation, Tensor(shape: policyLogits.shape, floats: gradient, dataType: policyLogits.dataType))
    }

    /// Calls `body` for every token, in parallel (tokens own disjoint rows), with its index, its policy and reference
    /// logits rows, and its slot of `results`: `stride` values at `index` (stride 1) or at its row (stride V).
    private static func forEachToken<Result>(
        _ tokens: [SequenceLogProbs.Token], _ policy: [Float], _ reference: [Float], vocabulary: Int,
        results: inout [Result], stride: Int,
        _ body: (Int, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Result>) -> Void
    ) {
        policy.withUnsafeBufferPointer { policyRows in
            reference.withUnsafeBufferPointer { referenceRows in
                results.withUnsafeMutableBufferPointer { output in
                    let (p, q, out) = (policyRows.baseAddress!, referenceRows.baseAddress!, output.baseAddress!)
                    Parallel.forEachChunk(tokens.count, minimumPerThread: max(1, 65_536 / vocabulary)) { range in
                        for index in range {
                            let offset = tokens[index].row * vocabulary
                            body(index, p + offset, q + offset, out + (stride == 1 ? index : offset))
                        }
                    }
                }
            }
        }
    }

    /// `(max, log Σ exp(row − max))` of a logits row, in Double.
    private static func logSumExp(_ row: UnsafePointer<Float>, _ count: Int) -> (Double, Double) {
        var maximum = -Double.infinity
        for v in 0..<count { maximum = max(maximum, Double(row[v])) }
        var sum = 0.0
        for v in 0..<count { sum += exp(Double(row[v]) - maximum) }
        return (maximum, log(sum))
    }

    /// KL(q ‖ p) = Σ_v q_v·(log q_v − log p_v) of two logits rows, in Double.
    private static func divergence(reference: UnsafePointer<Float>, policy: UnsafePointer<Float>, _ count: Int) -> Double {
        let (referenceMaximum, referenceLogSum) = logSumExp(reference, count)
        let (policyMaximum, policyLogSum) = logSumExp(policy, count)
        var total = 0.0
        for v in 0..<count {
            let logQ = Double(reference[v]) - referenceMaximum - referenceLogSum
            let logP = Double(policy[v]) - policyMaximum - policyLogSum
            total += exp(logQ) * (logQ - logP)
        }
        return total
    }
}
