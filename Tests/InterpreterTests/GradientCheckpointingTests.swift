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
        // Everything kept; attention cores recomputed (the default); blocks and their attention cores recomputed;
        // blocks recomputed with their attention kept.
        let plain = try session.forward(feeds, trainable: trainable, recomputeAttention: false)
        let runs = [
            ("attention recomputed", try session.forward(feeds, trainable: trainable)),
            ("checkpointing", try session.forward(feeds, trainable: trainable, gradientCheckpointing: true)),
            ("checkpointing, attention kept",
             try session.forward(feeds, trainable: trainable, gradientCheckpointing: true, recomputeAttention: false)),
        ]
        if !session.attentionPlan.segments.isEmpty, runs[0].1.keptBytes >= plain.keptBytes {
            failures.append("\(name): recomputing attention keeps \(runs[0].1.keptBytes) bytes, everything \(plain.keptBytes)")
        }
        let logitsName = session.outputs[0].name
        let logits = try XCTUnwrap(plain.outputs[logitsName])
        let seed = Tensor(shape: logits.shape, floats: uniformTestValues(logits.count, seed: 7))
        let expected = try plain.backward([logitsName: seed])
        for (label, run) in runs {
            XCTAssertEqual(run.outputs[logitsName]?.floats, logits.floats, "\(name), \(label): the forward pass is the same")
            XCTAssertEqual(run.recordedOperators, plain.recordedOperators, "\(name), \(label): the same nodes are differentiated")
            let actual = try run.backward([logitsName: seed])
            for weight in trainable.sorted() where actual[weight]?.floats != expected[weight]?.floats {
                failures.append("\(name): the gradient of \(weight) differs with \(label)")
            }
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

    /// Every Softmax attention of the exports is one attention core: from the score product to the product that
    /// reads the probabilities, and the tape keeps none of the `[batch, heads, queries, keys]` matrices.
    func testAttentionCoresAreFoundAndNotKept() throws {
        var failures: [String] = []
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let session = try Session(model: model)
            let nodes = session.nodes
            let softmaxes = nodes.filter { $0.opType == "Softmax" }.count
            let cores = session.attentionPlan.segments
            if cores.count != softmaxes {
                failures.append("\(fixture.name): \(cores.count) attention cores for \(softmaxes) Softmax nodes")
            }
            for core in cores {
                let types = core.map { nodes[$0].opType }
                let products = ["MatMul", "FusedMatMul", "GroupedMatMul"]
                if !products.contains(types.first!) || !products.contains(types.last!)
                    || !types.contains("Softmax") {
                    failures.append("\(fixture.name): attention core \(types)")
                }
            }
            // What the tape keeps shrinks by at least the probabilities (batch x heads x queries x keys per layer),
            // less the one additive mask (batch x queries x keys) the recomputation reads and every layer shares.
            let feeds = try fixture.inputs()
            let trainable = projectionWeights(model)
            let kept = try session.forward(feeds, trainable: trainable, recomputeAttention: false).keptBytes
            let recomputed = try session.forward(feeds, trainable: trainable).keptBytes
            let ids = try XCTUnwrap(feeds["input_ids"])
            let configuration = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(fixture.folder)/config.json"))) as? [String: Any]
            let heads = try XCTUnwrap((configuration?["num_attention_heads"] ?? configuration?["n_head"]) as? Int)
            let (batch, length) = (ids.shape[0], ids.shape[1])
            let probabilities = softmaxes * batch * heads * length * length * MemoryLayout<Float>.size
            let mask = batch * length * length * MemoryLayout<Float>.size
            if kept - recomputed < probabilities - mask {
                failures.append("\(fixture.name): recomputing attention saves \(kept - recomputed) bytes of \(kept), less than the \(probabilities) of the probabilities less a \(mask)-byte mask")
            }
        }
        XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
    }
}
