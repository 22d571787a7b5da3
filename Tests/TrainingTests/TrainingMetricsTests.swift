import Training
import Foundation
import TestSupport
import XCTest

/// The typed metrics write TRL's names, and `metrics.jsonl` is what a `[String: Double]` written by
/// `JSONSerialization` (the writer before the metrics were typed) would be, line for line.
final class TrainingMetricsTests: XCTestCase {
    static let objective = ObjectiveMetrics(
        loss: 0.6931471805599453, rewardsChosen: 0.001, rewardsRejected: -0.25, rewardsAccuracies: 0.5,
        rewardsMargins: 0.251, logpsChosen: -85.20084077119827, logpsRejected: -71.5, logitsChosen: 0.007,
        logitsRejected: 1e-7)
    static let trlObjectiveKeys: Set = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                        "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen",
                                        "logits/rejected"]

    func dictionary<T: Encodable>(_ value: T) throws -> [String: Double] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: try JSONEncoder().encode(value)) as? [String: Double])
    }

    func testStepAndEvalMetricsUseTRLsNamesAndRoundTrip() throws {
        let step = StepMetrics(objective: Self.objective, gradNorm: 0.142, learningRate: 0.00375, step: 3,
                               epoch: 0.3333333333333333, tokensPerSecond: 174.5, etaSeconds: 9.25)
        let encoded = try dictionary(step)
        XCTAssertEqual(Set(encoded.keys), Self.trlObjectiveKeys.union(
            ["grad_norm", "learning_rate", "step", "epoch", "tokens_per_second", "eta_seconds"]))
        XCTAssertEqual(encoded["rewards/margins"], 0.251)
        XCTAssertEqual(encoded["grad_norm"], 0.142)
        XCTAssertEqual(encoded["step"], 3)
        XCTAssertEqual(try JSONDecoder().decode(StepMetrics.self, from: try JSONEncoder().encode(step)), step)

        let eval = EvalMetrics(objective: Self.objective, step: 3)
        let evalEncoded = try dictionary(eval)
        XCTAssertEqual(Set(evalEncoded.keys), Set(Self.trlObjectiveKeys.map { "eval_\($0)" }).union(["step"]))
        XCTAssertEqual(evalEncoded["eval_logps/chosen"], -85.20084077119827)
        XCTAssertEqual(try JSONDecoder().decode(EvalMetrics.self, from: try JSONEncoder().encode(eval)), eval)

        XCTAssertEqual(Set(try dictionary(Self.objective).keys), Self.trlObjectiveKeys)
    }

    func testMetricsFileLinesAreWhatTheDictionaryWriterWrote() throws {
        let output = try temporaryDirectory(for: self)
        var options = DPOTrainingOptions(modelPath: DPOTrainerTests.model, tokenizerPath: DPOTrainerTests.tokenizer,
                                         dataPath: DPOTrainerTests.data, outputDirectory: output.path)
        options.evalDataPath = fixturePath("dpo/eval.jsonl")
        options.learningRate = 1e-2
        options.batchSize = 4
        options.maxSteps = 2
        options.gradientAccumulation = 2
        options.shuffle = false
        var reported: [StepMetrics] = []
        var evaluations: [EvalMetrics] = []
        try DPOTrainer(options: options).train { event in
            if case .step(let metrics) = event { reported.append(metrics) }
            if case .evaluation(let metrics) = event { evaluations.append(metrics) }
        }
        let lines = try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, "two steps, then the evaluation after the last")
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            let rewritten = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            XCTAssertEqual(String(decoding: rewritten, as: UTF8.self), line)
        }
        XCTAssertEqual(try lines.prefix(2).map { try JSONDecoder().decode(StepMetrics.self, from: Data($0.utf8)) }, reported)
        XCTAssertEqual(try JSONDecoder().decode(EvalMetrics.self, from: Data(lines[2].utf8)), evaluations.first)
        XCTAssertEqual(reported.map(\.step), [1, 2])
        XCTAssertEqual(evaluations.map(\.step), [2])
    }
}
