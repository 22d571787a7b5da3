import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// The DPO losses and their gradients with respect to the logits, through the completion log-probabilities.
final class DPOObjectiveTests: XCTestCase {
    // Two pairs: sequences [c0, c1, r0, r1], 5 positions, vocabulary 7.
    static let shape = [4, 5, 7]
    static let ids: [Int64] = [1, 2, 3, 4, 0, 1, 2, 5, 6, 0, 1, 2, 3, 6, 6, 1, 2, 4, 4, 1]
    static let mask: [Bool] = [
        false, false, true, true, false,
        false, false, true, true, true,
        false, false, true, true, true,
        false, false, true, false, false,
    ]

    static func logits(seed: Double) -> Tensor {
        let count = shape.reduce(1, *)
        return Tensor(shape: shape, floats: (0..<count).map { Float(sin(Double($0) * 1.7 + seed) * 2) })
    }

    func testSigmoidLossIsLog2WhenThePolicyIsTheReference() throws {
        let policy = try SequenceLogProbs(logits: Self.logits(seed: 0), inputIDs: Self.ids, completionMask: Self.mask)
        let evaluation = try DPOObjective().evaluate(policy: policy, referenceChosen: Array(policy.sums[0..<2]),
                                                     referenceRejected: Array(policy.sums[2...]))
        XCTAssertEqual(evaluation.loss, log(2), accuracy: 1e-12)
        XCTAssertEqual(evaluation.metrics.rewardsAccuracies, 0, "strict >: equal rewards are not accurate")
        XCTAssertEqual(evaluation.metrics.rewardsMargins, 0, accuracy: 1e-12)
        XCTAssertEqual(policy.counts, [2, 3, 3, 1])
    }

    func testLogitsGradientMatchesFiniteDifferencesForEveryLossType() throws {
        let reference = try SequenceLogProbs(logits: Self.logits(seed: 1), inputIDs: Self.ids, completionMask: Self.mask)
        let objectives: [(String, DPOObjective)] = [
            ("sigmoid", DPOObjective(beta: 0.5)),
            ("hinge", DPOObjective(beta: 0.3, terms: [(.hinge, 1)])),
            ("ipo", DPOObjective(beta: 0.5, terms: [(.ipo, 1)])),
            ("robust", DPOObjective(beta: 0.5, terms: [(.robust, 1)], labelSmoothing: 0.2)),
            ("sigmoid_norm", DPOObjective(beta: 2, terms: [(.sigmoidNorm, 1)])),
            ("rpo", DPOObjective(beta: 0.5, terms: [(.sigmoid, 1), (.sft, 0.7)])),
        ]
        for (label, objective) in objectives {
            let logits = Self.logits(seed: 2)
            let policy = try SequenceLogProbs(logits: logits, inputIDs: Self.ids, completionMask: Self.mask)
            let evaluation = try objective.evaluate(policy: policy, referenceChosen: Array(reference.sums[0..<2]),
                                                    referenceRejected: Array(reference.sums[2...]))
            let gradient = SequenceLogProbs.logitsGradient(logits: logits, inputIDs: Self.ids, tokens: policy.tokens, length: 5) { sequence, _ in
                Float(sequence < 2 ? evaluation.chosenSequenceGradients[sequence] + evaluation.chosenTokenGradient
                                   : evaluation.rejectedSequenceGradients[sequence - 2])
            }
            let indices = Swift.stride(from: 0, to: logits.count, by: 3)
            let problem = try gradientCheck("logits", values: logits, analytic: gradient.floats, indices: indices) { shifted in
                // Computed in Double; float32 enters through the logits and the token log-probabilities.
                let policy = try SequenceLogProbs(logits: shifted, inputIDs: Self.ids, completionMask: Self.mask)
                let loss = try objective.evaluate(policy: policy, referenceChosen: Array(reference.sums[0..<2]),
                                                  referenceRejected: Array(reference.sums[2...])).loss
                return LossValue(loss)
            }
            XCTAssertNil(problem, label)
        }
    }

    func testRobustLossRejectsLabelSmoothingOutsideItsRange() throws {
        let policy = try SequenceLogProbs(logits: Self.logits(seed: 0), inputIDs: Self.ids, completionMask: Self.mask)
        assertThrows(["robust", "0.5"]) {
            try DPOObjective(terms: [(.robust, 1)], labelSmoothing: 0.5)
                .evaluate(policy: policy, referenceChosen: [0, 0], referenceRejected: [0, 0])
        }
    }
}
