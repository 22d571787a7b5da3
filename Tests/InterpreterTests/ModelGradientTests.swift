import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Gradients through whole exported models: `loss = Σ R · logits` over real-token positions, differentiated with
/// respect to a projection weight, against central finite differences (TestSupport's `gradientCheck`).
final class ModelGradientTests: XCTestCase {
    func testWeightGradientsMatchFiniteDifferencesOnEveryFixture() throws {
        var failures: [String] = []
        for fixture in try ExportFixture.all() {
            do {
                try checkWeightGradient(fixture, &failures)
            } catch {
                failures.append("\(fixture.name): \(error)")
            }
        }
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
    }

    func checkWeightGradient(_ fixture: ExportFixture, _ failures: inout [String]) throws {
        let model = try fixture.model()
        let feeds = try fixture.inputs()
        // The first projection: the first MatMul or Gemm reading a 2-D float initializer.
        let initializers = Dictionary(model.graph.initializers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard let weight = model.graph.nodes.lazy
            .filter({ $0.opType == "MatMul" || $0.opType == "Gemm" })
            .compactMap({ $0.inputs.dropFirst().first.flatMap { initializers[$0] } })
            .first(where: { $0.shape.count == 2 && $0.dataType == .float }) else {
            failures.append("\(fixture.name): no projection weight found")
            return
        }
        let session = try Session(model: model)
        let pass = try session.forward(feeds, trainable: [weight.name])
        XCTAssertLessThan(pass.recordedOperators.count, session.nodes.count, "\(fixture.name): only the weight's path is recorded")
        for opType in ["Shape", "Range", "ConstantOfShape", "Equal", "Cos", "Sin"] {
            XCTAssertFalse(pass.recordedOperators.contains(opType), "\(fixture.name): \(opType) is not on the weight's path")
        }
        let logits = try XCTUnwrap(pass.outputs["logits"])
        let mask = try XCTUnwrap(feeds["attention_mask"]).int64s
        let vocabulary = logits.shape[2]
        // R is zero at padded positions: their logits are not compared anywhere.
        var weights = uniformTestValues(logits.count, seed: 99)
        for position in mask.indices where mask[position] == 0 {
            for index in (position * vocabulary)..<((position + 1) * vocabulary) { weights[index] = 0 }
        }
        let gradient = try XCTUnwrap(try pass.backward(["logits": Tensor(shape: logits.shape, floats: weights)])[weight.name])
        let values = try model.loadTensor(weight)
        XCTAssertEqual(gradient.shape, values.shape)
        let indices = Swift.stride(from: 0, to: values.count, by: values.count / 5)
        let problem = try gradientCheck(weight.name, values: values, analytic: gradient.floats, indices: indices) { shifted in
            try session.setInitializer(weight.name, shifted)
            return .weightedSum(try session.run(feeds)["logits"]!.floats, weights, depth: ExportFixture.roundingDepth)
        }
        try session.setInitializer(weight.name, values)
        if let problem { failures.append("\(fixture.name): \(problem)") }
    }

    func testBackwardRunsOnceAndRejectsOutputsNoTrainableValueReaches() throws {
        let fixture = try ExportFixture.named("llama-dynamo")
        let model = try fixture.model()
        let feeds = try fixture.inputs()
        let session = try Session(model: model)
        assertThrows(["input_ids", "cannot be trained"]) { try session.forward(feeds, trainable: ["input_ids"]) }
        assertThrows(["nonexistent", "not an initializer or graph input"]) { try session.forward(feeds, trainable: ["nonexistent"]) }
    }
}
