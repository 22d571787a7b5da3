import Training
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// The KTO losses, their metrics and their gradients with respect to the logits, through the completion
/// log-probabilities (the KL rows detached).
final class KTOObjectiveTests: XCTestCase {
    // Two rows, desirable then undesirable: sequences [y0, y1, y'0, y'1] (completions, then KL completions).
    static let ids = DPOObjectiveTests.ids
    static let mask = DPOObjectiveTests.mask
    static let labels = [true, false]

    static func policy(_ logits: Tensor) throws -> SequenceLogProbs {
        try SequenceLogProbs(logits: logits, inputIDs: ids, completionMask: mask)
    }

    func testPolicyEqualToReferenceGivesHalfTheWeights() throws {
        let policy = try Self.policy(DPOObjectiveTests.logits(seed: 0))
        let objective = KTOObjective(beta: 0.1, desirableWeight: 1, undesirableWeight: 1.5)
        let evaluation = try objective.evaluate(policy: policy, labels: Self.labels, reference: Array(policy.sums[..<2]),
                                                referenceKL: Array(policy.sums[2...]))
        // z = 0, r = 0: each row's loss is its weight · (1 − σ(0)) = weight / 2; the mean over the two rows.
        XCTAssertEqual(evaluation.loss, (1 * 0.5 + 1.5 * 0.5) / 2, accuracy: 1e-12)
        XCTAssertEqual(evaluation.metrics["kl"], 0)
        XCTAssertEqual(evaluation.metrics["rewards/margins"], 0)
        XCTAssertEqual(evaluation.metrics["logps/chosen"], policy.sums[0])
        XCTAssertEqual(evaluation.metrics["logps/rejected"], policy.sums[1])
        XCTAssertNil(evaluation.metrics["rewards/accuracies"])
        XCTAssertEqual(evaluation.rejectedSequenceGradients, [0, 0], "the KL rows are detached")
    }

    func testKLEstimateIsTheMeanLogRatioOfTheKLRowsClampedAtZero() throws {
        let policy = try Self.policy(DPOObjectiveTests.logits(seed: 0))
        let objective = KTOObjective(beta: 0.5)
        for shift in [0.8, -0.8] {
            let referenceKL = policy.sums[2...].map { $0 - shift }
            let evaluation = try objective.evaluate(policy: policy, labels: Self.labels, reference: Array(policy.sums[..<2]),
                                                    referenceKL: referenceKL)
            XCTAssertEqual(try XCTUnwrap(evaluation.metrics["kl"]), max(0, shift), accuracy: 1e-12)
            // r = 0: desirable 1 − σ(−β z), undesirable 1 − σ(β z).
            let z = max(0, shift)
            let expected = ((1 - 1 / (1 + exp(0.5 * z))) + (1 - 1 / (1 + exp(-0.5 * z)))) / 2
            XCTAssertEqual(evaluation.loss, expected, accuracy: 1e-12)
        }
    }

    func testLogitsGradientMatchesFiniteDifferencesWithTheKLDetached() throws {
        let reference = try Self.policy(DPOObjectiveTests.logits(seed: 1))
        let objectives: [(String, KTOObjective)] = [
            ("kto", KTOObjective(beta: 0.5, desirableWeight: 1, undesirableWeight: 1.25)),
            ("kto, desirable-weighted", KTOObjective(beta: 2, desirableWeight: 1.7, undesirableWeight: 0.5)),
            ("apo_zero_unpaired", KTOObjective(lossType: .apoZeroUnpaired, beta: 0.5)),
        ]
        for (label, objective) in objectives {
            let logits = DPOObjectiveTests.logits(seed: 2)
            let policy = try Self.policy(logits)
            let referenceKL = reference.sums[2...].map { $0 - 3 }  // z > 0: not clamped
            let evaluation = try objective.evaluate(policy: policy, labels: Self.labels, reference: Array(reference.sums[..<2]),
                                                    referenceKL: referenceKL)
            if objective.estimatesKL { XCTAssertGreaterThan(try XCTUnwrap(evaluation.metrics["kl"]), 0, label) }
            let gradient = SequenceLogProbs.logitsGradient(logits: logits, inputIDs: Self.ids, tokens: policy.tokens, length: 5) { sequence, _ in
                Float(sequence < 2 ? evaluation.chosenSequenceGradients[sequence] : evaluation.rejectedSequenceGradients[sequence - 2])
            }
            // The KL numerator of the unshifted logits: TRL computes it under no_grad, so it is a constant here.
            let detachedKL = KTOObjective.klSum(policy: policy, referenceKL: referenceKL)
            let indices = Swift.stride(from: 0, to: logits.count, by: 2)
            let problem = try gradientCheck("logits", values: logits, analytic: gradient.floats, indices: indices) { shifted in
                let loss = try objective.evaluate(policy: try Self.policy(shifted), labels: Self.labels,
                                                  reference: Array(reference.sums[..<2]), referenceKL: referenceKL,
                                                  klSum: detachedKL).loss
                return LossValue(loss)
            }
            XCTAssertNil(problem, label)
        }
    }

    func testAKindTheBatchLacksHasNoMetric() throws {
        let policy = try Self.policy(DPOObjectiveTests.logits(seed: 0))
        let evaluation = try KTOObjective().evaluate(policy: policy, labels: [true, true], reference: [0, 0],
                                                     referenceKL: [0, 0])
        XCTAssertNotNil(evaluation.metrics["rewards/chosen"])
        XCTAssertNil(evaluation.metrics["rewards/rejected"])
        XCTAssertNil(evaluation.metrics["logps/rejected"])
        XCTAssertNil(evaluation.metrics["rewards/margins"])
        XCTAssertNil(evaluation.metrics["logits/rejected"])
        let encoded = try XCTUnwrap(try JSONSerialization.jsonObject(with: JSONEncoder().encode(evaluation.metrics)) as? [String: Double])
        XCTAssertEqual(Set(encoded.keys), ["loss", "kl", "rewards/chosen", "logps/chosen", "logits/chosen"])
    }

    func testSharesOfABatchAddUpToTheWholeBatch() throws {
        // Row-wise shares against the whole batch's totals and KL numerator sum to the whole batch's evaluation.
        let policy = try Self.policy(DPOObjectiveTests.logits(seed: 3))
        let reference = [policy.sums[0] + 0.4, policy.sums[1] - 0.7], referenceKL = [policy.sums[2] - 1, policy.sums[3] - 2]
        let objective = KTOObjective(beta: 0.3, desirableWeight: 1, undesirableWeight: 1.2)
        let whole = try objective.evaluate(policy: policy, labels: Self.labels, reference: reference, referenceKL: referenceKL)
        let totals = KTOObjective.Totals(policy, labels: Self.labels)
        let klSum = KTOObjective.klSum(policy: policy, referenceKL: referenceKL)
        var metrics = ObjectiveMetrics.empty
        var gradients: [Double] = []
        for row in 0..<2 {
            let part = try SequenceLogProbs.rows([row, row + 2], of: policy)
            let evaluation = try objective.evaluate(policy: part, labels: [Self.labels[row]], reference: [reference[row]],
                                                    referenceKL: [referenceKL[row]], totals: totals, klSum: klSum)
            metrics = metrics.combined(with: evaluation.metrics, +)
            gradients += evaluation.chosenSequenceGradients
        }
        for name in whole.metrics.names {
            XCTAssertEqual(try XCTUnwrap(metrics[name]), try XCTUnwrap(whole.metrics[name]), accuracy: 1e-12, name)
        }
        XCTAssertEqual(gradients, whole.chosenSequenceGradients)
    }

    func testEntropyIsLogVocabularyForUniformLogitsAndAveragedOverCompletionTokens() throws {
        let uniform = Tensor(shape: DPOObjectiveTests.shape, floats: [Float](repeating: 0.3, count: 4 * 5 * 7))
        let policy = try Self.policy(uniform)
        // The completion rows (sequences 0 and 1) score 2 + 3 tokens.
        XCTAssertEqual(KTOObjective.entropySum(logits: uniform, policy: policy, rows: 2), 5 * log(7), accuracy: 1e-5)
        let evaluation = try KTOObjective().evaluate(policy: policy, labels: Self.labels, reference: [0, 0], referenceKL: [0, 0],
                                                     entropySum: 5 * log(7))
        XCTAssertEqual(try XCTUnwrap(evaluation.metrics["entropy"]), log(7), accuracy: 1e-12)
        // Peaked logits have less entropy.
        let peaked = DPOObjectiveTests.logits(seed: 0)
        XCTAssertLessThan(KTOObjective.entropySum(logits: peaked, policy: try Self.policy(peaked), rows: 2), 5 * log(7))
    }

    func testMismatchedInputsAreAnError() throws {
        let policy = try Self.policy(DPOObjectiveTests.logits(seed: 0))
        assertThrows(["4 sequences", "3 rows"]) {
            try KTOObjective().evaluate(policy: policy, labels: [true, false, true], reference: [0, 0, 0], referenceKL: [0, 0, 0])
        }
    }
}

extension SequenceLogProbs {
    /// Sequences `indices` of `policy` alone (their sums, counts and logit sums), for share tests.
    static func rows(_ indices: [Int], of policy: SequenceLogProbs) throws -> SequenceLogProbs {
        var part = policy
        part.sums = indices.map { policy.sums[$0] }
        part.counts = indices.map { policy.counts[$0] }
        part.meanLogitSums = indices.map { policy.meanLogitSums[$0] }
        part.tokens = []
        return part
    }
}
