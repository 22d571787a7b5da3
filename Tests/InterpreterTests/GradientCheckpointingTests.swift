import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// `Session.forward(gradientCheckpointing: true)`: blocks found from the graph, recomputed in the backward pass,
/// gradients bit for bit those of the run that keeps every activation.
final class GradientCheckpointingTests: XCTestCase {
    /// Every float projection weight of `model` (the MatMul/Gemm weights), trained at once so that the gradient runs
    /// through every block.
    private func projectionWeights(_ model: Model) -> Set<String> {
        let initializers = Dictionary(model.graph.initializers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        return Set(model.graph.nodes.filter { $0.opType == "MatMul" || $0.opType == "Gemm" }
            .compactMap { $0.inputs.dropFirst().first.flatMap { initializers[$0] } }
            .filter { $0.shape.count == 2 && $0.dataType == .float }.map(\.name))
    }

    private func compare(_ name: String, model: Model, feeds: [String: Tensor], failures: inout [String]) throws {
        let session = try Session(model: model)
        // Two layers: at least one block each.
        guard session.checkpointPlan.segments.count >= 2 else {
            failures.append("\(name): \(session.checkpointPlan.segments.count) checkpointed blocks, expected at least 2")
            return
        }
        let trainable = projectionWeights(model)
        guard !trainable.isEmpty else { failures.append("\(name): no projection weight"); return }
        let plain = try session.forward(feeds, trainable: trainable)
        let checkpointed = try session.forward(feeds, trainable: trainable, gradientCheckpointing: true)
        let logitsName = session.outputs[0].name
        let logits = try XCTUnwrap(plain.outputs[logitsName])
        XCTAssertEqual(checkpointed.outputs[logitsName]?.floats, logits.floats, "\(name): the forward pass is the same")
        XCTAssertEqual(checkpointed.recordedOperators, plain.recordedOperators, "\(name): the same nodes are differentiated")
        let seed = Tensor(shape: logits.shape, floats: uniformTestValues(logits.count, seed: 7))
        let expected = try plain.backward([logitsName: seed])
        let actual = try checkpointed.backward([logitsName: seed])
        for weight in trainable.sorted() where actual[weight]?.floats != expected[weight]?.floats {
            failures.append("\(name): the gradient of \(weight) differs with checkpointing")
        }
    }

    func testGradientsAreBitIdenticalOnEveryExport() throws {
        var failures: [String] = []
        for fixture in try ExportFixture.all() {
            try compare(fixture.name, model: try fixture.model(), feeds: try fixture.inputs(), failures: &failures)
        }
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
    }

    func testGradientsAreBitIdenticalOnBuilderGraphs() throws {
        var failures: [String] = []
        for fixture in try BuilderFixture.all() where fixture.precision == "fp32" {
            let model = try fixture.model()
            var feeds = try fixture.inputs()
            feeds.merge(try KVCacheInputs(model: model).emptyFeeds(batch: feeds["input_ids"]!.shape[0])) { a, _ in a }
            try compare(fixture.name, model: model, feeds: feeds, failures: &failures)
        }
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
    }

    func testBlocksStartAtResidualSums() throws {
        let session = try Session(model: try ExportFixture.named("llama-dynamo").model())
        let plan = session.checkpointPlan
        // The embedding, then attention and MLP of 2 layers.
        XCTAssertEqual(plan.segments.count, 4, "\(plan.segments)")
        XCTAssertEqual(session.nodes[plan.segments[0].lowerBound - 1].opType, "Gather", "the first block starts after the embedding")
        for segment in plan.segments {
            XCTAssertEqual(session.nodes[segment.upperBound].opType, "Add", "a block ends at a residual sum")
        }
    }
}
