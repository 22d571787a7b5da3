@testable import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// `Session.packWeights`: frozen weights packed once into the GEMM's panels, in their stored precision, and the
/// session's unpacked copies dropped.
final class WeightPackingTests: XCTestCase {
    /// Every export and builder fixture gives the same outputs, bit for bit, with its weights packed (all of them:
    /// the fixtures' weights are under the size that is packed by default): the packed product runs the same
    /// micro-kernels over the same blocks of k as a product that packs B on every call.
    func testPackedSessionsGiveTheSameOutputsBitForBit() throws {
        var cases: [(String, Model, [String: Tensor])] = try ExportFixture.all().map { ($0.name, try $0.model(), try $0.inputs()) }
        cases += try BuilderFixture.all().map { ($0.name, try $0.model(), try $0.inputs()) }
        cases.append(("llama-float16", try Model.load(path: fixturePath("export/llama-float16/model.onnx")),
                      try ExportFixture.named("llama-dynamo").inputs()))
        var packedTotal = 0
        for (name, model, inputs) in cases {
            let plain = try Session(model: model), packed = try Session(model: model)
            let count = try packed.packWeights(minimumCount: 1)
            packedTotal += count
            var feeds = inputs.filter { key, _ in plain.inputs.contains { $0.name == key } }
            if let batch = feeds["input_ids"]?.shape.first {
                feeds.merge(try KVCacheInputs(model: model).emptyFeeds(batch: batch)) { given, _ in given }
            }
            let expected = try plain.run(feeds), actual = try packed.run(feeds)
            XCTAssertEqual(Set(actual.keys), Set(expected.keys), name)
            for (output, tensor) in expected {
                assertBitIdentical(actual[output], tensor, "\(name) \(output) (\(count) weights packed)")
            }
        }
        XCTAssertGreaterThan(packedTotal, 6 * 4, "every fixture's projections are packed")
    }

    /// float16 weights stay 2 bytes a value in the panels; the unpacked copy is dropped, the tied embedding's too
    /// (its Gather reads rows from the LM head's panels); LoRA-sized matrices stay as they are.
    func testPanelsKeepTheStoredPrecisionAndWeightsAreHeldOnce() throws {
        let weight = Tensor(shape: [64, 600], floats: (0..<38_400).map { Float(Float16(Float($0 % 97) * 0.01)) },
                            dataType: .float16)
        let packed = try XCTUnwrap(try PackedWeight(weight, transposed: false))
        XCTAssertEqual(packed.matrix.byteCount, 64 * ((600 + packed.matrix.columnAlignment - 1) / packed.matrix.columnAlignment
                                                      * packed.matrix.columnAlignment) * 2)
        XCTAssertNil(try PackedWeight(Tensor(shape: [4], floats: [1, 2, 3, 4]), transposed: false), "only matrices")

        let model = try ExportFixture.named("llama-dynamo").model()
        let byDefault = try Session(model: model)
        XCTAssertEqual(try byDefault.packWeights(), 1, "of the tiny fixture's weights only the tied embedding is over the default size")
        XCTAssertEqual(byDefault.packedWeightNames, [try XCTUnwrap(model.graph.nodes.first { $0.opType == "Gather" }?.inputs.first)])
        let session = try Session(model: model)
        let before = session.constantCount
        let count = try session.packWeights(minimumCount: 1)
        XCTAssertGreaterThan(count, 0)
        XCTAssertEqual(session.constantCount, before - count, "each packed weight's unpacked copy is dropped")
        // The tied embedding (read by the Gather and, transposed, by the LM head) is among them.
        let embedding = try XCTUnwrap(model.graph.nodes.first { $0.opType == "Gather" }?.inputs.first)
        XCTAssert(session.packedWeightNames.contains(embedding), "the tied embedding is packed")
        // Kept unpacked when asked, and then so is nothing else that reads it.
        let keeping = try Session(model: model)
        try keeping.packWeights(minimumCount: 1, keeping: [embedding])
        XCTAssertFalse(keeping.packedWeightNames.contains(embedding))
        XCTAssertNoThrow(try keeping.setInitializer(embedding, try model.loadTensor(
            XCTUnwrap(model.graph.initializers.first { $0.name == embedding }))))
    }

    /// A Gather reads rows of its table from a product's panels only when the product packed the table transposed
    /// (its rows are then the panels' columns), on axis 0, and the rows it returns are the table's.
    func testGatherReadsRowsFromPanelsOnlyWhenTheyAreTheTableRows() throws {
        let table = Tensor(shape: [70, 40], floats: (0..<2800).map { Float($0) * 0.25 - 300 })
        let transposed = try XCTUnwrap(try PackedWeight(table, transposed: true))
        let plain = try XCTUnwrap(try PackedWeight(table, transposed: false))
        let gather = try Gather(node: Node(name: "g", opType: "Gather", inputs: ["table", "ids"], outputs: ["rows"]), version: 13)
        let indices = Tensor(shape: [2, 3], int64s: [0, 69, -1, 33, 34, 5])
        XCTAssertNil(gather.reading(plain), "columns of an untransposed packing are not rows of the table")
        let onAxis1 = try Gather(node: Node(name: "g", opType: "Gather", inputs: ["table", "ids"], outputs: ["rows"],
                                            attributes: ["axis": .int(1)]), version: 13)
        XCTAssertNil(onAxis1.reading(transposed))
        let reading = try XCTUnwrap(gather.reading(transposed))
        let expected = try gather.run([table, indices])[0]
        assertBitIdentical(try reading.run([nil, indices])[0], expected, "rows from the panels")
        XCTAssertThrowsError(try reading.run([nil, Tensor(shape: [1], int64s: [70])]))
    }

    func testPackedSessionsRefuseTrainingAndReplacingAPackedWeight() throws {
        let fixture = try ExportFixture.named("llama-dynamo")
        let model = try fixture.model()
        let session = try Session(model: model)
        try session.packWeights(minimumCount: 1)
        let inputs = try fixture.inputs()
        let weight = try XCTUnwrap(model.graph.initializers.first { initializer in
            initializer.shape.count == 2 && model.graph.nodes.contains { $0.opType == "MatMul" && $0.inputs.last == initializer.name }
        })
        XCTAssert(session.packedWeightNames.contains(weight.name))
        assertThrows([weight.name, "packed", "cannot be trained"]) {
            try session.forward(inputs, trainable: [weight.name])
        }
        assertThrows([weight.name, "packed", "packWeights"]) {
            try session.setInitializer(weight.name, try model.loadTensor(weight))
        }
        XCTAssertNotNil(try session.forward(inputs, trainable: []).outputs["logits"], "a forward pass training nothing still runs")
    }

    /// Training on a session whose frozen weights are packed: the backward pass reads the forward's panels for
    /// `dY · Wᵀ`, and the gradients of the weights kept unpacked and trained are those of an unpacked session, bit
    /// for bit (the repacked blocks hold the same values in the same layout). Every export fixture and the float16
    /// one (GPT-2's Gemm projections are not packed); the trained weights are the first and last projections, the rest
    /// packed.
    func testTrainingOnPackedWeightsGivesTheSameGradientsBitForBit() throws {
        var cases: [(String, Model, [String: Tensor])] = try ExportFixture.all().map { ($0.name, try $0.model(), try $0.inputs()) }
        cases.append(("llama-float16", try Model.load(path: fixturePath("export/llama-float16/model.onnx")),
                      try ExportFixture.named("llama-dynamo").inputs()))
        var covered: [String] = []
        for (name, model, inputs) in cases {
            let projections = model.graph.initializers.filter { initializer in
                initializer.shape.count == 2 && model.graph.nodes.contains {
                    ["MatMul", "FusedMatMul"].contains($0.opType) && $0.inputs.dropFirst().first == initializer.name
                }
            }.map(\.name)
            // GPT-2's exports compute their projections with Gemm, which is not packed.
            guard let first = projections.first, let last = projections.last, projections.count > 2 else { continue }
            covered.append(name)
            let trainable: Set<String> = [first, last]
            let plain = try Session(model: model), packed = try Session(model: model)
            let count = try packed.packWeights(minimumCount: 1, keeping: trainable)
            XCTAssertGreaterThan(count, 0, name)
            XCTAssertTrue(packed.packedWeightNames.isDisjoint(with: trainable), name)
            let feeds = inputs.filter { key, _ in plain.inputs.contains { $0.name == key } }
            let expected = try seededGradients(plain, feeds: feeds, trainable: trainable)
            let actual = try seededGradients(packed, feeds: feeds, trainable: trainable)
            XCTAssertEqual(Set(actual.keys), trainable, name)
            for weight in trainable {
                assertBitIdentical(actual[weight], try XCTUnwrap(expected[weight]), "\(name) d\(weight) (\(count) packed)")
            }
        }
        XCTAssertGreaterThanOrEqual(covered.count, 4, "fixtures with packed projections: \(covered)")
    }
}
