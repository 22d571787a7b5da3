import Training
import Foundation
import TestSupport
import XCTest

/// DPO on an onnx-community-style int8 file (fixtures/int8/llama-int8: DynamicQuantizeLinear + MatMulInteger
/// projections, a uint8 embedding): q and v adapted beside their frozen int8 weights, gradients reaching them through
/// the later quantised projections by the straight-through rule.
final class Int8TrainingTests: XCTestCase {
    func testDPOStepsOnTheInt8FixtureHaveFiniteGradientsAndLowerTheLoss() throws {
        try assertFullBatchDPOStepsLowerTheLoss(model: "\(Int8Fixture.folder)/model.onnx", tokenizer: Int8Fixture.tokenizerPath,
                                                output: try temporaryDirectory(for: self), label: "llama-int8")
    }
}
