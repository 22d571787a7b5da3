import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// LoRA on onnxruntime-genai builder graphs (fixtures/builder, `tools/make_builder_fixtures.py`): q and v are found
/// through GroupQueryAttention's packed query input as column ranges of the fused qkv projection (a MatMul, or a
/// frozen MatMulNBits in the int4 builds), and gradients reach A and B through the attention and its rotary.
final class BuilderLoRATests: XCTestCase {
    /// The fixture's model and its reference batch with the KV-cache inputs fed empty.
    static func load(_ fixture: BuilderFixture) throws -> (Model, [String: Tensor]) {
        let model = try fixture.model()
        var feeds = try fixture.inputs()
        feeds.merge(try KVCacheInputs(model: model).emptyFeeds(batch: feeds["input_ids"]!.shape[0])) { a, _ in a }
        return (model, feeds)
    }

    func testQAndVAreTheColumnRangesOfTheFusedProjectionFeedingGroupQueryAttention() throws {
        for fixture in try BuilderFixture.all() {
            let model = try fixture.model()
            let targets = try LoRATargets.find(in: model)
            XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v], fixture.name)
            XCTAssertEqual(targets.map(\.layer), [0, 0, 1, 1], fixture.name)
            // 4 query heads and 2 key/value heads of 16: q is columns 0..<64, k 64..<96, v 96..<128.
            let storage: LoRATarget.Layout = fixture.precision == "int4" ? .matMulNBits(bits: 4, blockSize: 32) : .matMul
            for (target, columns) in zip(targets, [0..<64, 96..<128, 0..<64, 96..<128]) {
                XCTAssertEqual(target.layout, .fused(storage: storage, columns: [columns]), "\(fixture.name) \(target)")
                XCTAssertEqual(target.inFeatures, 64)
                XCTAssertEqual(target.modulePath, "model.layers.\(target.layer).attn.qkv_proj")
            }
            if fixture.name.hasPrefix("qwen2") {
                XCTAssertNotNil(targets[0].bias, "\(fixture.name): Qwen2's qkv bias")
            }
            let all = try LoRATargets.find(in: model, matching: ["all-linear"])
            XCTAssertEqual(Set(all.map(\.kind)), [.q, .k, .v, .o, .mlp], fixture.name)
            XCTAssertEqual(all.filter { $0.kind == .mlp }.count, 6, "\(fixture.name): gate, up and down per layer")
            let modules = try LoRAModule.modules(for: targets, model: model)
            XCTAssertEqual(modules.count, 2, "\(fixture.name): q and v share one module per fused projection")
            XCTAssertEqual(modules[0].outFeatures, 128)
            XCTAssertEqual(modules[0].trainableOutputs, Array(0..<64) + Array(96..<128))
        }
    }

    func testZeroBGivesTheBaseModelAndTheAdapterChangesIt() throws {
        for fixture in try BuilderFixture.all() {
            let (model, feeds) = try Self.load(fixture)
            let base = try Session(model: model).run(feeds)["logits"]!
            let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
            let fresh = try AdaptedModel(model: model, adapter: .initialized(modules: modules, configuration: .init(), seed: 1))
            assertClose(try Session(model: fresh.model, additionalInitializers: fresh.initializers).run(feeds)["logits"]!,
                        base, relative: 0, absolute: 0, "\(fixture.name): B = 0")
            let adapted = try AdaptedModel(model: model, adapter: LoRAInjectionTests.randomAdapter(model, seed: 2))
            let logits = try Session(model: adapted.model, additionalInitializers: adapted.initializers).run(feeds)["logits"]!
            XCTAssertNotNil(closenessProblem(logits, base, relative: 1e-3, absolute: 1e-3), "\(fixture.name): the adapter changes the output")
        }
    }

    /// Whole-model LoRA gradients (through GroupQueryAttention's rotary for q, its values for v, and the frozen
    /// int4 MatMulNBits of the int4 builds) against central finite differences by TestSupport's `gradientCheck`,
    /// R zero at padded positions.
    func testAdapterGradientsMatchFiniteDifferences() throws {
        for fixture in try BuilderFixture.all() {
            let (model, feeds) = try Self.load(fixture)
            let adapted = try AdaptedModel(model: model, adapter: LoRAInjectionTests.randomAdapter(model, seed: 4))
            let session = try Session(model: adapted.model, additionalInitializers: adapted.initializers)
            let pass = try session.forward(feeds, trainable: Set(adapted.parameterNames))
            XCTAssertFalse(pass.recordedOperators.contains("GatherBlockQuantized"), "\(fixture.name): the embedding is frozen")
            let logits = pass.outputs["logits"]!
            let mask = feeds["attention_mask"]!.int64s, vocabulary = logits.shape[2]
            let weights = (0..<logits.count).map { mask[$0 / vocabulary] == 0 ? 0 : Float(sin(Double($0) * 0.37)) }
            var gradients = try pass.backward(["logits": Tensor(shape: logits.shape, floats: weights)])
            adapted.maskFrozenOutputs(&gradients)
            var checked = 0
            for parameter in adapted.parameterNames {
                let values = adapted.initializers[parameter]!, gradient = gradients[parameter]!
                let module = adapted.modules.first { parameter == AdaptedModel.transposedBName($0.modulePath) }
                // B's columns: one q column and one v column of the fused projection (k columns are frozen).
                let indices = module.map { [3 * $0.outFeatures + 5, 3 * $0.outFeatures + 100, 7] }
                    ?? Array(Swift.stride(from: 0, to: values.count, by: max(1, values.count / 4)))
                let problem = try gradientCheck(parameter, values: values, analytic: gradient.floats, indices: indices) { shifted in
                    try session.setInitializer(parameter, shifted)
                    return .weightedSum(try session.run(feeds)["logits"]!.floats, weights, depth: ExportFixture.roundingDepth)
                }
                try session.setInitializer(parameter, values)
                XCTAssertNil(problem, "\(fixture.name) d/d\(parameter)")
                checked += indices.count
            }
            XCTAssertEqual(checked, 14, "A: 4 values, B: one k-free q, v and q column, for each of 2 modules")
        }
    }
}
