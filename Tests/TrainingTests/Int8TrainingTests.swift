import Training
import Foundation
import TestSupport
import XCTest

/// DPO on an onnx-community-style int8 file (fixtures/int8/llama-int8: DynamicQuantizeLinear + MatMulInteger
/// projections, a uint8 embedding): q and v adapted beside their frozen int8 weights, gradients reaching them through
/// the later quantised projections by the straight-through rule.
final class Int8TrainingTests: XCTestCase {
    func testDPOStepsOnTheInt8FixtureHaveFiniteGradientsAndLowerTheLoss() throws {
        let output = try temporaryDirectory(for: self)
        var options = DPOTrainingOptions(modelPath: "\(Int8Fixture.folder)/model.onnx", tokenizerPath: Int8Fixture.tokenizerPath,
                                         dataPath: fixturePath("dpo/preferences.jsonl"), outputDirectory: output.path)
        options.learningRate = 1e-2
        options.batchSize = 24  // every pair, so that each step sees the same batch and the loss must fall
        options.maxSteps = 3
        options.shuffle = false
        options.schedule = .constant
        var losses: [Double] = [], norms: [Double] = []
        try DPOTrainer(options: options).train { event in
            if case .step(let metrics) = event {
                losses.append(metrics.objective.loss)
                norms.append(metrics.gradNorm)
            }
        }
        print("llama-int8 DPO losses \(losses), gradient norms \(norms)")
        XCTAssertEqual(losses.count, 3)
        XCTAssertEqual(losses[0], log(2), accuracy: 1e-12, "B = 0, so the policy is the reference")
        XCTAssert(norms.allSatisfy { $0.isFinite && $0 > 0 }, "\(norms)")
        for step in 1..<losses.count { XCTAssertLessThan(losses[step], losses[step - 1], "step \(step + 1): \(losses)") }
        XCTAssert(FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter/adapter_config.json").path))
    }
}
