@testable import Adapters
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
                // The builder packed the Hugging Face model's separate q_proj/k_proj/v_proj: each part is named as
                // the Hugging Face model names it.
                XCTAssertEqual(target.modulePath, "model.layers.\(target.layer).self_attn.\(target.kind.rawValue)_proj")
            }
            if fixture.name.hasPrefix("qwen2") {
                XCTAssertNotNil(targets[0].bias, "\(fixture.name): Qwen2's qkv bias")
            }
            let all = try LoRATargets.find(in: model, matching: ["all-linear"])
            XCTAssertEqual(Set(all.map(\.kind)), [.q, .k, .v, .o, .mlp], fixture.name)
            XCTAssertEqual(all.filter { $0.kind == .mlp }.count, 6, "\(fixture.name): gate, up and down per layer")
            // One module per part: q with A [r, 64], B [64, r] on columns 0..<64; v with its own A and B [32, r] on
            // columns 96..<128; the k columns belong to no module.
            let modules = try LoRAModule.modules(for: targets, model: model)
            XCTAssertEqual(modules.count, 4, "\(fixture.name): q and v are separate modules on each packed projection")
            XCTAssertEqual(modules.map(\.outFeatures), [64, 32, 64, 32])
            XCTAssertEqual(modules.map(\.storedOutFeatures), [128, 128, 128, 128])
            XCTAssertEqual(modules[0].placement, Array(0..<64))
            XCTAssertEqual(modules[1].placement, Array(96..<128))
            XCTAssertEqual(modules[0].trainableOutputs, Array(0..<64))
            XCTAssertEqual(Set(modules.map(\.node)).count, 2)
        }
    }

    /// The rule, both ways: parts of an attention op's packed input (the runtime's packing) are separate modules;
    /// parts of a fused projection the source model itself has (GPT-2's `c_attn`, Phi-3's `qkv_proj`, found through
    /// a decomposed attention) share one module, as PEFT has one adapter for that one Hugging Face module.
    func testPackedPartsAreSeparateModulesAndFusedModulesStayShared() throws {
        for name in ["gpt2-dynamo", "phi3-torchscript"] {
            let model = try Model.load(path: fixturePath("models/\(name)/model.onnx"))
            let targets = try LoRATargets.find(in: model)
            let modules = try LoRAModule.modules(for: targets, model: model)
            XCTAssertEqual(modules.count, 2, "\(name): one shared module per fused projection")
            XCTAssert(modules.allSatisfy { $0.placement == nil && $0.targets.count == 2 }, name)
        }
        // A builder folder of a model whose Hugging Face attention is one qkv_proj (genai_config.json type phi3):
        // the packed projection is that module, shared, named as the Hugging Face model names it.
        let folder = try temporaryDirectory(for: self)
        let source = repositoryPath("fixtures/builder/llama-fp32")
        for name in ["model.onnx", "model.onnx.data"] {
            try FileManager.default.copyItem(atPath: "\(source)/\(name)", toPath: folder.appendingPathComponent(name).path)
        }
        let configuration = try String(contentsOfFile: "\(source)/genai_config.json", encoding: .utf8)
        try configuration.replacingOccurrences(of: "\"type\": \"llama\"", with: "\"type\": \"phi3\"")
            .write(to: folder.appendingPathComponent("genai_config.json"), atomically: true, encoding: .utf8)
        let phi3 = try Model.load(path: folder.appendingPathComponent("model.onnx").path)
        let shared = try LoRAModule.modules(for: try LoRATargets.find(in: phi3), model: phi3)
        XCTAssertEqual(shared.map(\.modulePath), ["model.layers.0.self_attn.qkv_proj", "model.layers.1.self_attn.qkv_proj"])
        XCTAssert(shared.allSatisfy { $0.placement == nil && $0.outFeatures == 128 && $0.trainableOutputs == Array(0..<64) + Array(96..<128) })

        XCTAssertEqual(ModulePaths.packedPart(of: "model.layers.3.attn.qkv_proj", kind: .v, layer: 3), "model.layers.3.self_attn.v_proj")
        XCTAssertEqual(ModulePaths.packedPart(of: "blocks.1.qkv", kind: .q, layer: 1), "blocks.1.q_proj")
        XCTAssertEqual(ModulePaths.packedPart(of: "encoder.fused", kind: .q, layer: 0), "encoder.fused.q_proj")
        XCTAssertEqual(ModulePaths.packedPart(of: nil, kind: .v, layer: 2), "layers.2.attention.v_proj")
    }

    /// A PEFT adapter trained on the Hugging Face model (separate q_proj / v_proj A and B, TRL's initial adapter of
    /// fixtures/trl-int4) loads onto the packed projection, and the merged fp32 weight of each part equals
    /// `W + scale·B·A` on that part's columns while the k columns keep their exact bits.
    func testPEFTAdapterWithSeparateQAndVLoadsAndMergesOntoThePackedProjection() throws {
        let model = try Model.load(path: repositoryPath("fixtures/builder/llama-fp32/model.onnx"))
        let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
        let adapter = try AdapterFolder.read(fixturePath("trl-int4/initial_adapter"), modules: modules)
        let (q, v) = (modules[0], modules[1])
        let initializer = try XCTUnwrap(model.graph.initializers.first { $0.name == q.weight })
        let weight = try model.loadTensor(initializer)  // [in 64, out 128]
        let merged = try adapter.merged(try adapter.merged(weight, module: q), module: v)
        let scale = Float(adapter.configuration.scale), rank = adapter.configuration.rank
        let (w, m) = (weight.floats, merged.floats)
        var largest: Float = 0
        for output in 0..<128 {
            for input in 0..<64 {
                let index = input * 128 + output
                guard let (module, row) = output < 64 ? (q, output) : output >= 96 ? (v, output - 96) : nil else {
                    XCTAssertEqual(m[index].bitPattern, w[index].bitPattern, "k column \(output) is untouched")
                    continue
                }
                let a = adapter.a[module.modulePath]!.floats, b = adapter.b[module.modulePath]!.floats
                var delta: Float = 0
                for r in 0..<rank { delta += b[row * rank + r] * a[r * 64 + input] }
                largest = max(largest, abs(delta))
                XCTAssertEqual(m[index], w[index] + scale * delta, accuracy: 1e-6)
            }
        }
        XCTAssertGreaterThan(largest, 1e-3, "the initial adapter's B is not zero")
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
                let indices = module.map { [3 * $0.outFeatures + 5, 2 * $0.outFeatures + $0.outFeatures - 1, 7] }
                    ?? Array(Swift.stride(from: 0, to: values.count, by: max(1, values.count / 4)))
                let problem = try gradientCheck(parameter, values: values, analytic: gradient.floats, indices: indices) { shifted in
                    try session.setInitializer(parameter, shifted)
                    return .weightedSum(try session.run(feeds)["logits"]!.floats, weights, depth: ExportFixture.roundingDepth)
                }
                try session.setInitializer(parameter, values)
                XCTAssertNil(problem, "\(fixture.name) d/d\(parameter)")
                checked += indices.count
            }
            XCTAssertEqual(checked, 28, "A: 4 values, B: 3 values, for each of 4 modules (q and v of 2 layers)")
        }
    }
}
