import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// `ONNXExport` and `AdapterConversion`: export → re-import → forward equals the adapted forward; only the adapted
/// output features change; shared weights get a private merged copy; float16 weights are rounded once; bad input
/// is refused with nothing written. (onnxruntime and the onnx checker run on exports in interop/.)
final class ExportTests: XCTestCase {

    private func logits(_ model: Model, _ feeds: [String: Tensor], extra: [String: Tensor] = [:]) throws -> Tensor {
        try Session(model: model, additionalInitializers: extra).run(feeds)["logits"]!
    }

    private func initializerBytes(_ model: Model) throws -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        for initializer in model.graph.initializers {
            let tensor = try model.loadTensor(initializer)
            result[initializer.name] = TensorEncoding.raw(tensor)
        }
        return result
    }

    func testMergedExportReimportsToTheAdaptedForwardOnEveryFixture() throws {
        let folder = try temporaryDirectory(for: self)
        for fixture in try ExportFixture.all() {
            let (model, feeds) = (try fixture.model(), try fixture.inputs())
            let adapter = try LoRAInjectionTests.randomAdapter(model, seed: 11)
            let adapted = try AdaptedModel(model: model, adapter: adapter)
            let expected = try logits(adapted.model, feeds, extra: adapted.initializers)
            let output = folder.appendingPathComponent("\(fixture.name).onnx").path
            let report = try ONNXExport.write(model: model, adapter: adapter, form: .merged, to: output)
            let merged = try Model.load(path: output)
            assertClose(try logits(merged, feeds), expected, relative: 1e-4, absolute: 1e-4, "\(fixture.name): merged")
            XCTAssertEqual(report.mergedWeights.sorted(), adapter.modules.map(\.weight).sorted(), fixture.name)
            XCTAssertEqual(report.dataFile != nil, fixture.external_data, "\(fixture.name): external data kept as the input had it")
            XCTAssertEqual(merged.graph.nodes.map(\.name), model.graph.nodes.map(\.name), fixture.name)
            XCTAssertEqual(merged.opsetImports, model.opsetImports, fixture.name)
            XCTAssertEqual(merged.irVersion, model.irVersion, fixture.name)
            XCTAssertEqual(merged.graph.valueInfo, model.graph.valueInfo, fixture.name)
            XCTAssertEqual(merged.metadata.last?.key, ONNXExport.provenanceKey, fixture.name)

            let nodes = try ONNXExport.write(model: model, adapter: adapter, form: .loraNodes, to: output)
            XCTAssertEqual(nodes.form, .loraNodes)
            assertClose(try logits(try Model.load(path: output), feeds), expected, relative: 1e-4, absolute: 1e-4,
                        "\(fixture.name): lora-nodes")
        }
    }

    func testFusedProjectionChangesOnlyTheAdaptedColumnsAndOtherTensorsKeepTheirBits() throws {
        let folder = try temporaryDirectory(for: self)
        for name in ["gpt2-torchscript", "phi3-dynamo", "gpt-neox-dynamo", "llama-dynamo"] {
            let model = try ExportFixture.named(name).model()
            let adapter = try LoRAInjectionTests.randomAdapter(model, seed: 12)  // q and v rows only
            let output = folder.appendingPathComponent("\(name).onnx").path
            try ONNXExport.write(model: model, adapter: adapter, form: .merged, to: output)
            let before = try initializerBytes(model), after = try initializerBytes(try Model.load(path: output))
            XCTAssertEqual(Set(before.keys), Set(after.keys))
            let adaptedWeights = Set(adapter.modules.map(\.weight))
            for (key, bytes) in before where !adaptedWeights.contains(key) {
                XCTAssertEqual(after[key], bytes, "\(name): '\(key)' is not adapted and must keep its bits")
            }
            for module in adapter.modules {
                let initializer = try XCTUnwrap(model.graph.initializers.first { $0.name == module.weight })
                let original = try model.loadTensor(initializer).floats
                let written = try Model.load(path: output)
                let exported = try written.loadTensor(written.graph.initializers[initializer.index]).floats
                let outByIn = module.targets[0].layout.isWeightOutByIn
                let trainable = Set(module.trainableOutputs)
                for output in 0..<module.outFeatures {
                    var changed = false
                    for input in 0..<module.inFeatures {
                        let index = outByIn ? output * module.inFeatures + input : input * module.outFeatures + output
                        if original[index].bitPattern != exported[index].bitPattern { changed = true }
                    }
                    XCTAssertEqual(changed, trainable.contains(output), "\(name) \(module.modulePath): output feature \(output)")
                }
            }
        }
    }

    func testNoAdapterReproducesEveryTensorBitForBit() throws {
        let folder = try temporaryDirectory(for: self)
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let output = folder.appendingPathComponent("\(fixture.name).onnx").path
            try ONNXExport.write(model: model, adapter: nil, form: .merged, to: output)
            XCTAssertEqual(try initializerBytes(try Model.load(path: output)), try initializerBytes(model), fixture.name)
        }
    }

    /// Dynamo's layout of a tied weight: one initializer read by two nodes. The adapted projection must read a
    /// merged copy and the other reader the original.
    func testSharedWeightGetsAPrivateMergedCopy() throws {
        let folder = try temporaryDirectory(for: self)
        let fixture = try ExportFixture.named("llama-torchscript")
        let original = try fixture.model()
        let target = try LoRATargets.find(in: original)[0]
        // A second reader of the q weight, whose output becomes a graph output we can compare.
        let editor = ModelEditor(original)
        editor.insertNode(Node(name: "tied_reader", opType: "Identity", inputs: [target.weight], outputs: ["tied_value"]), at: 0)
        let sharedPath = folder.appendingPathComponent("shared.onnx").path
        try editor.write(to: sharedPath)
        let model = try Model.load(path: sharedPath)
        let adapter = try LoRAInjectionTests.randomAdapter(model, seed: 13)
        let output = folder.appendingPathComponent("merged.onnx").path
        let report = try ONNXExport.write(model: model, adapter: adapter, form: .merged, to: output)
        XCTAssertEqual(report.copiedWeights.count, 1)
        XCTAssertTrue(report.copiedWeights[0].hasPrefix("\(target.weight) -> "), report.copiedWeights[0])
        let merged = try Model.load(path: output)
        let feeds = try fixture.inputs()
        let adapted = try AdaptedModel(model: model, adapter: adapter)
        assertClose(try logits(merged, feeds), try logits(adapted.model, feeds, extra: adapted.initializers),
                    relative: 1e-4, absolute: 1e-4, "the projection reads the merged copy")
        XCTAssertEqual(try initializerBytes(merged)[target.weight], try initializerBytes(model)[target.weight],
                       "the other reader keeps the original weight")
        XCTAssertEqual(merged.graph.nodes.first { $0.name == "tied_reader" }?.inputs, [target.weight])
    }

    /// TorchScript's layout of tied embeddings: two copies. An adapter on the output head merges into the head's
    /// copy only; the embedding table keeps its bits.
    func testTiedEmbeddingCopiesStaySeparate() throws {
        let folder = try temporaryDirectory(for: self)
        let model = try ExportFixture.named("llama-torchscript").model()
        let heads = try LoRATargets.find(in: model, kinds: [.other])
        let modules = try LoRAModule.modules(for: heads, model: model)
        var adapter = LoRAAdapter.initialized(modules: modules, configuration: LoRAConfiguration(rank: 2, alpha: 4), seed: 3)
        for module in modules {
            adapter.b[module.modulePath] = Tensor(shape: [module.outFeatures, 2], floats: (0..<(module.outFeatures * 2)).map { Float($0 % 7) * 0.01 })
        }
        let output = folder.appendingPathComponent("head.onnx").path
        let report = try ONNXExport.write(model: model, adapter: adapter, form: .merged, to: output)
        XCTAssertEqual(report.mergedWeights, modules.map(\.weight))
        let before = try initializerBytes(model), after = try initializerBytes(try Model.load(path: output))
        let changed = before.keys.filter { before[$0] != after[$0] }
        XCTAssertEqual(changed, modules.map(\.weight), "only the head's copy changes; the embedding table keeps its bits")
    }

    func testAdapterFolderFromElsewhereIsMappedByModulePath() throws {
        // The PEFT reference adapters (tools/make_convert_references.py) load for their ONNX exports, fused
        // projections on all their output features and rsLoRA's scale included.
        for (name, fixture, scale) in [("qwen2-torchscript-rslora", "qwen2-torchscript", 8.0), ("gpt2-torchscript-c_attn", "gpt2-torchscript", 2.0)] {
            let model = try ExportFixture.named(fixture).model()
            let adapter = try AdapterFolder.read(fixturePath("peft/\(name)"), for: model).adapter
            XCTAssertEqual(adapter.configuration.scale, scale, accuracy: 1e-12, name)
            for module in adapter.modules { XCTAssertEqual(module.trainableOutputs.count, module.outFeatures, name) }
        }
    }

    /// float16 weights (the fixture from tools/make_float16_fixture.py) stay float16, merged in float32 and rounded
    /// once: every merged value is the float16 nearest to `W + scale·ΔW` (computed here in Double), but for rare
    /// near-ties that float32's own rounding may tip, and never more than one float16 step away. Rounding ΔW to
    /// float16 before adding, or rounding twice, fails this.
    func testFloat16WeightsAreMergedInFloat32AndRoundedOnce() throws {
        let folder = try temporaryDirectory(for: self)
        let model = try Model.load(path: fixturePath("export/llama-float16/model.onnx"))
        let adapter = try LoRAInjectionTests.randomAdapter(model, seed: 14)
        let output = folder.appendingPathComponent("merged.onnx").path
        try ONNXExport.write(model: model, adapter: adapter, form: .merged, to: output)
        let merged = try Model.load(path: output)
        let rank = adapter.configuration.rank, scale = adapter.configuration.scale
        var values = 0, notNearest = 0
        for module in adapter.modules {
            let initializer = try XCTUnwrap(model.graph.initializers.first { $0.name == module.weight })
            XCTAssertEqual(merged.graph.initializers[initializer.index].dataType, .float16)
            let before = try model.loadTensor(initializer).floats
            let after = try merged.loadTensor(merged.graph.initializers[initializer.index]).floats
            let a = adapter.a[module.modulePath]!.floats, b = adapter.b[module.modulePath]!.floats
            for input in 0..<module.inFeatures {
                for output in 0..<module.outFeatures {
                    let index = input * module.outFeatures + output  // MatMul weight [in, out]
                    var delta = 0.0
                    for r in 0..<rank { delta += Double(b[output * rank + r]) * Double(a[r * module.inFeatures + input]) }
                    let exact = Double(before[index]) + scale * delta
                    let nearest = halfToFloat(floatToHalf(Float(exact)))
                    values += 1
                    if after[index] != nearest {
                        notNearest += 1
                        let step = Double(abs(halfToFloat(floatToHalf(nearest) + 1) - nearest))
                        XCTAssertLessThanOrEqual(abs(Double(after[index]) - exact), step, "\(module.modulePath)[\(input), \(output)]")
                    }
                }
            }
        }
        XCTAssertLessThan(Double(notNearest), 0.001 * Double(values), "\(notNearest) of \(values) merged values are not the nearest float16")
    }

    // MARK: - Bad input

    /// A copy of the llama-dynamo PEFT reference adapter with `edit` applied to its tensors.
    private func editedAdapter(_ folder: URL, _ name: String, _ edit: (inout [(name: String, tensor: Tensor)]) -> Void) throws -> String {
        let source = fixturePath("peft/llama-dynamo-qv")
        let target = folder.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(source)/adapter_config.json", toPath: target.appendingPathComponent("adapter_config.json").path)
        var tensors = try SafeTensors.read(path: "\(source)/adapter_model.safetensors").tensors
        edit(&tensors)
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: target.appendingPathComponent("adapter_model.safetensors").path)
        return target.path
    }

    func testBadAdaptersAreRefusedWithNothingWritten() throws {
        let folder = try temporaryDirectory(for: self)
        let modelPath = fixturePath("models/llama-dynamo/model.onnx")
        let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        let shape = try editedAdapter(folder, "shape") { tensors in
            let index = tensors.firstIndex { $0.name == key }!
            tensors[index].tensor = Tensor(shape: [4, 32], floats: [Float](repeating: 0.1, count: 128))
        }
        let missing = try editedAdapter(folder, "missing") { tensors in
            tensors.removeAll { $0.name == key.replacingOccurrences(of: "lora_A", with: "lora_B") }
        }
        let extra = try editedAdapter(folder, "extra") { tensors in
            tensors.append(("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", Tensor(shape: [4, 64], floats: [Float](repeating: 0, count: 256))))
        }
        let cases: [(String, [String])] = [
            (shape, ["lora_A.weight", "[4, 32]", "[4, 64]"]),
            (missing, ["model.layers.0.self_attn.q_proj", "lora_B.weight"]),
            (extra, ["model.layers.9.self_attn.q_proj", "no projection"]),
            (fixturePath("peft/bad/dora"), ["DoRA"]),
        ]
        for (adapter, fragments) in cases {
            let output = folder.appendingPathComponent("out").path
            try? FileManager.default.removeItem(atPath: output)
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            for target in ConversionTarget.allCases {
                assertThrows(fragments) {
                    try AdapterConversion.convert(modelPath: modelPath, adapterPath: adapter, to: target, output: "\(output)/result")
                }
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output), [], "nothing written for \(adapter)")
        }
    }

    func testOutputOverTheInputIsRefused() throws {
        let folder = try temporaryDirectory(for: self)
        // Copy llama-dynamo (model + external data) so the input's files can be named as outputs.
        for file in ["model.onnx", "model.onnx.data"] {
            try FileManager.default.copyItem(atPath: fixturePath("models/llama-dynamo/\(file)"), toPath: folder.appendingPathComponent(file).path)
        }
        let modelPath = folder.appendingPathComponent("model.onnx").path
        let model = try Model.load(path: modelPath)
        let before = try Data(contentsOf: URL(fileURLWithPath: modelPath))
        assertThrows(["it is the input model"]) { try ONNXExport.write(model: model, adapter: nil, form: .merged, to: modelPath) }
        assertThrows(["external data file"]) {
            try ONNXExport.write(model: model, adapter: nil, form: .merged, to: folder.appendingPathComponent("model.onnx.data").path)
        }
        // `model` as the output name would put its data over the input's `model.onnx.data` too; here the symlink
        // `alias.onnx` names the input file itself.
        try FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent("alias.onnx").path, withDestinationPath: modelPath)
        assertThrows(["it is the input model"]) {
            try ONNXExport.write(model: model, adapter: nil, form: .merged, to: folder.appendingPathComponent("alias.onnx").path)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: modelPath)), before)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: folder.path)), ["model.onnx", "model.onnx.data", "alias.onnx"])
        assertThrows(["does not exist"]) {
            try ONNXExport.write(model: model, adapter: nil, form: .merged, to: folder.appendingPathComponent("missing/out.onnx").path)
        }
    }

    // MARK: - Other formats

    func testMLXRoundTripThroughConvert() throws {
        let folder = try temporaryDirectory(for: self)
        let modelPath = fixturePath("models/qwen2-torchscript/model.onnx")
        let source = fixturePath("peft/qwen2-torchscript-rslora")
        let mlx = folder.appendingPathComponent("mlx").path, peft = folder.appendingPathComponent("peft").path
        XCTAssertEqual(try AdapterConversion.convert(modelPath: modelPath, adapterPath: source, to: .mlx, output: mlx).sourceFormat, .peft)
        XCTAssertEqual(try AdapterConversion.convert(modelPath: modelPath, adapterPath: mlx, to: .peft, output: peft).sourceFormat, .mlx)
        let model = try Model.load(path: modelPath)
        let original = try AdapterFolder.read(source, for: model).adapter, back = try AdapterFolder.read(peft, for: model).adapter
        XCTAssertEqual(back.configuration.scale, original.configuration.scale, accuracy: 1e-9)
        for module in original.modules {
            XCTAssertEqual(back.a[module.modulePath]?.floats, original.a[module.modulePath]?.floats, module.modulePath)
            XCTAssertEqual(back.b[module.modulePath]?.floats, original.b[module.modulePath]?.floats, module.modulePath)
        }
    }
}
