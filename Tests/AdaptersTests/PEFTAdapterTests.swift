@testable import Adapters
import Interpreter
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// The safetensors reader and writer and the PEFT adapter folder: our files round-trip bit for bit, files written
/// by Python's `safetensors` and by PEFT itself (fixtures/peft, from tools/make_safetensors_fixtures.py) read to
/// the values those libraries saved, and every malformed or unsupported input is refused with a message that says
/// what is wrong.
final class PEFTAdapterTests: XCTestCase {
    static let fixtures = "fixtures/peft"

    static func modules(_ model: String) throws -> [LoRAModule] {
        let model = try Model.load(path: fixturePath("models/\(model)/model.onnx"))
        return try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
    }

    /// `LoRAAdapter.initialized` with B set to random values on the trainable rows (frozen rows of a fused
    /// projection stay zero, as training leaves them).
    static func adapter(_ modules: [LoRAModule], _ configuration: LoRAConfiguration, seed: UInt64) -> LoRAAdapter {
        var adapter = LoRAAdapter.initialized(modules: modules, configuration: configuration, seed: seed)
        var generator = SeededGenerator(seed: seed &+ 1)
        let rank = configuration.rank
        for module in modules {
            var values = [Float](repeating: 0, count: module.outFeatures * rank)
            for output in module.trainableOutputs {
                for r in 0..<rank { values[output * rank + r] = Float(generator.nextGaussian() * 0.3) }
            }
            adapter.b[module.modulePath] = Tensor(shape: [module.outFeatures, rank], floats: values)
        }
        return adapter
    }

    // MARK: Round trips

    func testAdapterRoundTripIsBitIdentical() throws {
        let configurations = [
            LoRAConfiguration(rank: 4, alpha: 8),
            LoRAConfiguration(rank: 3, alpha: 7.5, dropout: 0.05, useRSLoRA: true, initialization: .gaussian),
        ]
        for model in ["llama-dynamo", "gpt2-torchscript"] {
            let modules = try Self.modules(model)
            for (index, configuration) in configurations.enumerated() {
                let adapter = Self.adapter(modules, configuration, seed: UInt64(10 + index))
                let folder = try temporaryDirectory(for: self).appendingPathComponent("nested/adapter").path
                try adapter.save(to: folder, baseModelNameOrPath: index == 0 ? "fixtures/models/\(model)/model.onnx" : nil)
                let loaded = try AdapterFolder.read(folder, modules: modules)
                XCTAssertEqual(loaded.configuration, configuration, model)
                XCTAssertEqual(loaded.configuration.alpha.bitPattern, configuration.alpha.bitPattern)
                XCTAssertEqual(loaded.configuration.dropout.bitPattern, configuration.dropout.bitPattern)
                XCTAssertEqual(loaded.modules, modules)
                XCTAssertEqual(Set(loaded.a.keys), Set(adapter.a.keys))
                XCTAssertEqual(Set(loaded.b.keys), Set(adapter.b.keys))
                for module in modules {
                    assertBitIdentical(loaded.a[module.modulePath], adapter.a[module.modulePath], "\(model) A \(module.modulePath)")
                    assertBitIdentical(loaded.b[module.modulePath], adapter.b[module.modulePath], "\(model) B \(module.modulePath)")
                }
                // Saving again over the folder gives the same bytes.
                let weights = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_model.safetensors"))
                try loaded.save(to: folder, baseModelNameOrPath: index == 0 ? "fixtures/models/\(model)/model.onnx" : nil)
                XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_model.safetensors")), weights)
                XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(),
                               ["adapter_config.json", "adapter_model.safetensors"], "no temporary files left")
            }
        }
    }

    func testAdapterFilesUsePEFTNames() throws {
        let modules = try Self.modules("llama-dynamo")
        let adapter = Self.adapter(modules, LoRAConfiguration(rank: 4, alpha: 8, initialization: .gaussian), seed: 3)
        let folder = try temporaryDirectory(for: self).path
        try adapter.save(to: folder, baseModelNameOrPath: "fixtures/models/llama-dynamo/model.onnx")

        let config = try XCTUnwrap(JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_config.json"))) as? [String: Any])
        XCTAssertEqual(Set(config.keys), [
            "alpha_pattern", "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode", "init_lora_weights",
            "layers_to_transform", "lora_alpha", "lora_dropout", "modules_to_save", "peft_type", "r", "rank_pattern",
            "revision", "target_modules", "task_type", "use_dora", "use_rslora",
        ])
        XCTAssertEqual(config["peft_type"] as? String, "LORA")
        XCTAssertEqual(config["task_type"] as? String, "CAUSAL_LM")
        XCTAssertEqual(config["r"] as? Int, 4)
        XCTAssertEqual(config["lora_alpha"] as? Int, 8)
        XCTAssertEqual(config["lora_dropout"] as? Double, 0)
        XCTAssertEqual(config["target_modules"] as? [String], ["q_proj", "v_proj"])
        XCTAssertEqual(config["use_rslora"] as? Bool, false)
        XCTAssertEqual(config["bias"] as? String, "none")
        XCTAssertEqual(config["fan_in_fan_out"] as? Bool, false)
        XCTAssertEqual(config["init_lora_weights"] as? String, "gaussian")
        XCTAssertEqual(config["base_model_name_or_path"] as? String, "fixtures/models/llama-dynamo/model.onnx")
        XCTAssertEqual(config["inference_mode"] as? Bool, true)
        XCTAssertEqual(config["use_dora"] as? Bool, false)
        for key in ["modules_to_save", "revision", "layers_to_transform"] { XCTAssertTrue(config[key] is NSNull, key) }
        XCTAssertEqual((config["rank_pattern"] as? [String: Any])?.count, 0)
        XCTAssertEqual((config["alpha_pattern"] as? [String: Any])?.count, 0)
        XCTAssertEqual(PEFTAdapter.targetModules(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]), ["c_attn"])

        let file = try SafeTensors.read(path: "\(folder)/adapter_model.safetensors")
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(Set(file.tensors.map(\.name)), Set(modules.flatMap {
            ["base_model.model.\($0.modulePath).lora_A.weight", "base_model.model.\($0.modulePath).lora_B.weight"]
        }))
        let q = try XCTUnwrap(modules.first { $0.modulePath == "model.layers.0.self_attn.q_proj" })
        XCTAssertEqual(file["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]?.shape, [4, q.inFeatures])
        XCTAssertEqual(file["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]?.shape, [q.outFeatures, 4])

        // Kaiming is PEFT's `init_lora_weights: true`.
        try Self.adapter(modules, LoRAConfiguration(rank: 2, alpha: 2), seed: 4).save(to: folder)
        let kaiming = try XCTUnwrap(JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_config.json"))) as? [String: Any])
        XCTAssertEqual(kaiming["init_lora_weights"] as? Bool, true)
        XCTAssertTrue(kaiming["base_model_name_or_path"] is NSNull)
    }

    func testSafeTensorsRoundTripKeepsEachType() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("t.safetensors").path
        let tensors: [(name: String, tensor: Tensor)] = [
            ("f32", Tensor(shape: [2, 2], floats: [1.5, -0, .infinity, Float(bitPattern: 0x5000)])),
            ("f16", Tensor(shape: [3], floats: [0.5, -65504, 5.9604645e-08], dataType: .float16)),
            ("bf16", Tensor(shape: [2], floats: [0.1015625, -3], dataType: .bfloat16)),
            ("i64", Tensor(shape: [2], int64s: [-5, 1 << 40])),
            ("i32", Tensor(shape: [1], int64s: [-7], dataType: .int32)),
            ("empty", Tensor(shape: [0, 3], floats: [])),
            ("scalar", Tensor(scalar: Float(2))),
            ("mask", Tensor(shape: [2], bools: [true, false])),
        ]
        try SafeTensors.write(tensors, metadata: ["format": "pt", "quote\"d": "a\\b\n"], to: path)
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(file.tensors.map(\.name), tensors.map(\.name), "data order is write order")
        XCTAssertEqual(file.metadata, ["format": "pt", "quote\"d": "a\\b\n"])
        for (name, tensor) in tensors {
            let read = try XCTUnwrap(file[name], name)
            XCTAssertNil(closenessProblem(read, tensor, relative: 0, absolute: 0), name)
            if case .float(let values) = read.storage {
                XCTAssertEqual(values.map(\.bitPattern), tensor.floats.map(\.bitPattern), name)
            }
        }
        // The header is padded so that the data is 8-byte aligned.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(headerLength % 8, 0)

        // F16 and BF16 round to nearest even; float64 is written as F32.
        try SafeTensors.write([("h", Tensor(shape: [2], floats: [1 + 0x1p-11, 1 + 3 * 0x1p-11], dataType: .float16)),
                               ("b", Tensor(shape: [2], floats: [1 + 0x1p-8, 1 + 3 * 0x1p-8], dataType: .bfloat16)),
                               ("d", Tensor(shape: [1], floats: [0.25], dataType: .double))], to: path)
        let rounded = try SafeTensors.read(path: path)
        XCTAssertEqual(rounded["h"]?.floats, [1, 1 + 2 * 0x1p-10])
        XCTAssertEqual(rounded["b"]?.floats, [1, 1 + 2 * 0x1p-7])
        XCTAssertEqual(rounded["d"]?.dataType, .float)
    }

    // MARK: Files written by Python

    func testReadsAFileWrittenByPythonSafetensors() throws {
        struct Expected: Decodable { var dtype: String; var shape: [Int]; var values: [Value] }
        enum Value: Decodable {
            case number(Double), text(String)
            init(from decoder: any Swift.Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let number = try? container.decode(Double.self) { self = .number(number) } else { self = .text(try container.decode(String.self)) }
            }
            var double: Double {
                switch self {
                case .number(let value): value
                case .text(let text): text == "inf" ? .infinity : -.infinity
                }
            }
        }
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: URL(
            fileURLWithPath: repositoryPath("\(Self.fixtures)/mixed.json"))))
        let file = try SafeTensors.read(path: repositoryPath("\(Self.fixtures)/mixed.safetensors"))
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "mixed dtypes"])
        XCTAssertEqual(Set(file.tensors.map(\.name)), Set(expected.keys))
        let types: [String: DataType] = ["F32": .float, "F16": .float16, "BF16": .bfloat16, "F64": .double, "I64": .int64, "I32": .int32]
        for (name, reference) in expected {
            let tensor = try XCTUnwrap(file[name], name)
            XCTAssertEqual(tensor.shape, reference.shape, name)
            XCTAssertEqual(tensor.dataType, types[reference.dtype], name)
            switch tensor.storage {
            case .float(let values):
                XCTAssertEqual(values.map(\.bitPattern), reference.values.map { Float($0.double).bitPattern }, name)
            case .int64, .bytes:
                XCTAssertEqual(tensor.int64s, reference.values.map { Int64($0.double) }, name)
            case .bool:
                XCTFail(name)
            }
        }
    }

    func testLoadsAnAdapterSavedByPEFT() throws {
        let modules = try Self.modules("llama-dynamo")
        let adapter = try AdapterFolder.read(repositoryPath("\(Self.fixtures)/llama-dynamo-saved"), modules: modules)
        XCTAssertEqual(adapter.configuration, LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, useRSLoRA: false,
                                                                initialization: .gaussian))
        let expected = try NPZ.read(path: repositoryPath("\(Self.fixtures)/llama-dynamo-saved.npz"))
        XCTAssertEqual(expected.count, 2 * modules.count)
        for module in modules {
            assertBitIdentical(adapter.a[module.modulePath], expected["\(module.modulePath).A"], "A \(module.modulePath)")
            assertBitIdentical(adapter.b[module.modulePath], expected["\(module.modulePath).B"], "B \(module.modulePath)")
        }
        XCTAssertTrue(adapter.b.values.contains { $0.floats.contains { $0 != 0 } }, "the fixture's B is not zero")

        // TRL's initial adapter (PEFT's defaults, r 8): kaiming, and it saves back to the same tensors.
        let trl = try AdapterFolder.read(fixturePath("trl/initial_adapter"), modules: modules)
        XCTAssertEqual(trl.configuration, LoRAConfiguration(rank: 8, alpha: 16))
        let folder = try temporaryDirectory(for: self).path
        try trl.save(to: folder)
        let original = try SafeTensors.read(path: fixturePath("trl/initial_adapter/adapter_model.safetensors"))
        let saved = try SafeTensors.read(path: "\(folder)/adapter_model.safetensors")
        XCTAssertEqual(Set(saved.tensors.map(\.name)), Set(original.tensors.map(\.name)))
        for (name, tensor) in original.tensors { assertBitIdentical(saved[name], tensor, name) }
    }

    // MARK: Refused adapters

    /// A copy of the PEFT fixture with `adapter_config.json` edited by `edit`.
    func editedFixture(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let folder = try temporaryDirectory(for: self).appendingPathComponent("adapter")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: repositoryPath("\(Self.fixtures)/llama-dynamo-saved")), to: folder)
        let configURL = folder.appendingPathComponent("adapter_config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        return folder.path
    }

    func testMissingFolderAndFilesAreNamed() throws {
        let modules = try Self.modules("llama-dynamo")
        let missing = try temporaryDirectory(for: self).appendingPathComponent("nowhere").path
        assertThrows(["'\(missing)' does not exist"]) { _ = try AdapterFolder.read(missing, modules: modules) }
        for name in ["adapter_config.json", "adapter_model.safetensors"] {
            let folder = try editedFixture { _ in }
            try FileManager.default.removeItem(atPath: "\(folder)/\(name)")
            assertThrows(["\(folder)/\(name)' does not exist"]) { _ = try AdapterFolder.read(folder, modules: modules) }
        }
    }

    func testUnsupportedConfigurationsAreRefusedSayingWhy() throws {
        let modules = try Self.modules("llama-dynamo")
        let cases: [([String], (inout [String: Any]) -> Void)] = [
            (["peft_type is \"IA3\"", "only \"LORA\""], { $0["peft_type"] = "IA3" }),
            (["use_dora is true", "DoRA"], { $0["use_dora"] = true }),
            (["rank_pattern is not empty", "model.layers.0.self_attn.q_proj", "not supported"],
             { $0["rank_pattern"] = ["model.layers.0.self_attn.q_proj": 8] }),
            (["alpha_pattern is not empty", "q_proj", "not supported"], { $0["alpha_pattern"] = ["q_proj": 32] }),
            (["bias is \"all\""], { $0["bias"] = "all" }),
            (["modules_to_save is set"], { $0["modules_to_save"] = ["lm_head"] }),
            (["init_lora_weights is \"pissa\"", "base model's weights"], { $0["init_lora_weights"] = "pissa" }),
            (["\"r\" is not a positive integer"], { $0["r"] = 0 }),
            (["\"lora_alpha\" is not a number"], { $0["lora_alpha"] = "eight" }),
        ]
        for (fragments, edit) in cases {
            let folder = try editedFixture(edit)
            assertThrows(fragments + ["\(folder)/adapter_config.json"]) { _ = try AdapterFolder.read(folder, modules: modules) }
        }
        let folder = try editedFixture { _ in }
        try Data("{\"peft_type\": ".utf8).write(to: URL(fileURLWithPath: "\(folder)/adapter_config.json"))
        assertThrows(["adapter_config.json", "not valid JSON"]) { _ = try AdapterFolder.read(folder, modules: modules) }
    }

    func testModuleAndShapeMismatchesAreNamed() throws {
        let modules = try Self.modules("llama-dynamo")
        let adapter = Self.adapter(modules, LoRAConfiguration(rank: 4, alpha: 8), seed: 5)
        let root = try temporaryDirectory(for: self)

        // A module the model does not adapt (k_proj).
        var extra = adapter
        let k = "model.layers.0.self_attn.k_proj"
        extra.modules.append(LoRAModule(modulePath: k, node: "k", weight: "k", inFeatures: 64, outFeatures: 32,
                                        trainableOutputs: Array(0..<32), targets: []))
        extra.a[k] = Tensor(shape: [4, 64], floats: [Float](repeating: 0.5, count: 256))
        extra.b[k] = Tensor(shape: [32, 4], floats: [Float](repeating: 0, count: 128))
        try extra.save(to: root.appendingPathComponent("extra").path)
        assertThrows(["module '\(k)'", "not among the model's adapted modules", "adapter_model.safetensors"]) {
            _ = try AdapterFolder.read(root.appendingPathComponent("extra").path, modules: modules)
        }

        // A module of the model that the file lacks.
        var fewer = adapter
        let dropped = fewer.modules.removeLast()
        try fewer.save(to: root.appendingPathComponent("fewer").path)
        assertThrows(["module '\(dropped.modulePath)'", "the adapter has no 'base_model.model.\(dropped.modulePath).lora_A.weight'"]) {
            _ = try AdapterFolder.read(root.appendingPathComponent("fewer").path, modules: modules)
        }

        // A of the wrong rank for the config, and B of the wrong output size.
        let module = modules[0]
        var wrongA = adapter
        wrongA.a[module.modulePath] = Tensor(shape: [5, module.inFeatures], floats: [Float](repeating: 1, count: 5 * module.inFeatures))
        try wrongA.save(to: root.appendingPathComponent("wrongA").path)
        assertThrows(["'base_model.model.\(module.modulePath).lora_A.weight' has shape [5, \(module.inFeatures)]",
                      "needs [4, \(module.inFeatures)]"]) {
            _ = try AdapterFolder.read(root.appendingPathComponent("wrongA").path, modules: modules)
        }
        var wrongB = adapter
        wrongB.b[module.modulePath] = Tensor(shape: [module.outFeatures + 1, 4], floats: [Float](repeating: 1, count: 4 * module.outFeatures + 4))
        try wrongB.save(to: root.appendingPathComponent("wrongB").path)
        assertThrows(["lora_B.weight' has shape [\(module.outFeatures + 1), 4]", "needs [\(module.outFeatures), 4]"]) {
            _ = try AdapterFolder.read(root.appendingPathComponent("wrongB").path, modules: modules)
        }

        // A key that is not a LoRA weight at all.
        let odd = root.appendingPathComponent("odd").path
        try adapter.save(to: odd)
        var tensors = try SafeTensors.read(path: "\(odd)/adapter_model.safetensors").tensors
        tensors.append(("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", Tensor(shape: [1], floats: [1])))
        try SafeTensors.write(tensors, to: "\(odd)/adapter_model.safetensors")
        assertThrows(["lora_magnitude_vector' is a DoRA magnitude vector"]) { _ = try AdapterFolder.read(odd, modules: modules) }
        tensors[tensors.count - 1].name = "base_model.model.model.layers.0.self_attn.q_proj.lora_E"
        try SafeTensors.write(tensors, to: "\(odd)/adapter_model.safetensors")
        assertThrows(["lora_E' is not a LoRA weight"]) { _ = try AdapterFolder.read(odd, modules: modules) }
    }

    /// On Linux, JSONSerialization's 1 also casts to `Bool` and `true` to a number; the configuration is read
    /// strictly, so `lora_alpha: 1` is a number and `use_rslora: 1` is not a boolean.
    func testNumbersAndBooleansAreToldApart() throws {
        let root = try temporaryDirectory(for: self)
        let model = try ExportFixture.named("llama-dynamo").model()
        let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
        let folder = root.appendingPathComponent("alpha1").path
        try LoRAAdapter.initialized(modules: modules, configuration: LoRAConfiguration(rank: 1, alpha: 1), seed: 1).save(to: folder)
        let loaded = try AdapterFolder.read(folder, modules: modules)
        XCTAssertEqual(loaded.configuration.alpha, 1)
        XCTAssertEqual(loaded.configuration.rank, 1)
        let config = "\(folder)/adapter_config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "\"use_rslora\": false", with: "\"use_rslora\": 1").write(toFile: config, atomically: true, encoding: .utf8)
        assertThrows(["use_rslora", "not true or false"]) { _ = try AdapterFolder.read(folder, modules: modules) }
    }

    func testFusedProjectionKeepsPEFTOrientationAndRefusesChangedFrozenRows() throws {
        // GPT-2's c_attn is a Conv1D in PyTorch ([in, out] weight, fan_in_fan_out in PEFT), but PEFT still stores
        // lora_A [r, in] and lora_B [out, r] with out = 3·hidden; only the q and v rows are adapted here.
        let modules = try Self.modules("gpt2-torchscript")
        let cAttn = try XCTUnwrap(modules.first)
        XCTAssertTrue(cAttn.modulePath.hasSuffix("attn.c_attn"), cAttn.modulePath)
        let adapter = Self.adapter(modules, LoRAConfiguration(rank: 2, alpha: 4), seed: 6)
        let folder = try temporaryDirectory(for: self).path
        try adapter.save(to: folder)
        let file = try SafeTensors.read(path: "\(folder)/adapter_model.safetensors")
        XCTAssertEqual(file[PEFTAdapter.aKey(cAttn.modulePath)]?.shape, [2, cAttn.inFeatures])
        XCTAssertEqual(file[PEFTAdapter.bKey(cAttn.modulePath)]?.shape, [3 * cAttn.inFeatures, 2])

        var tensors = file.tensors
        let index = try XCTUnwrap(tensors.firstIndex { $0.name == PEFTAdapter.bKey(cAttn.modulePath) })
        let frozen = try XCTUnwrap((0..<cAttn.outFeatures).first { !cAttn.trainableOutputs.contains($0) })
        var values = tensors[index].tensor.floats
        values[frozen * 2] = 0.25
        tensors[index].tensor = Tensor(shape: tensors[index].tensor.shape, floats: values)
        try SafeTensors.write(tensors, to: "\(folder)/adapter_model.safetensors")
        assertThrows(["module '\(cAttn.modulePath)'", "nonzero lora_B rows", "first: \(frozen)", "target patterns"]) {
            _ = try AdapterFolder.read(folder, modules: modules)
        }
    }

    // MARK: Refused safetensors files

    /// A safetensors file made of `header` (padded with spaces to a multiple of 8) and `data`.
    func rawFile(header: String, data: [UInt8], lengthOverride: UInt64? = nil) throws -> String {
        var text = header
        text += String(repeating: " ", count: (8 - text.utf8.count % 8) % 8)
        var bytes = Data()
        withUnsafeBytes(of: (lengthOverride ?? UInt64(text.utf8.count)).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(text.utf8))
        bytes.append(contentsOf: data)
        let path = try temporaryDirectory(for: self).appendingPathComponent("bad.safetensors").path
        try bytes.write(to: URL(fileURLWithPath: path))
        return path
    }

    func testMalformedSafeTensorsAreRefusedNamingFileAndTensor() throws {
        let eight = [UInt8](repeating: 0, count: 8)
        let cases: [(String, (header: String, data: [UInt8], length: UInt64?))] = [
            ("tensor 'x': data_offsets [0, 16] lie outside the 8 bytes of data",
             ("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", eight, nil)),
            ("tensor 'x': data_offsets [0, 8] hold 8 bytes, but F32 [3] needs 12",
             ("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", eight, nil)),
            ("data_offsets [0, 8] overlap tensor",
             ("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              eight, nil)),
            ("tensor 'x': bytes 0..<4 of the data before it belong to no tensor",
             ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", eight, nil)),
            ("the last 4 bytes of the data belong to no tensor",
             ("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", eight, nil)),
            ("tensor 'x': dtype F8_E4M3 is not supported",
             ("{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", eight, nil)),
            ("tensor 'x': shape", ("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", eight, nil)),
            ("the header is not valid JSON", ("{\"x\":{\"dtype\":", eight, nil)),
            ("the header length 4096 runs past the end of the file", ("{}", [], 4096)),
            ("__metadata__ 'n' is not a string", ("{\"__metadata__\":{\"n\":1}}", [], nil)),
        ]
        for (fragment, file) in cases {
            let path = try rawFile(header: file.header, data: file.data, lengthOverride: file.length)
            assertThrows([fragment, "safetensors file '\(path)'"]) { _ = try SafeTensors.read(path: path) }
        }
        let tiny = try temporaryDirectory(for: self).appendingPathComponent("tiny.safetensors").path
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: tiny))
        assertThrows(["fewer than the 8 of the header length"]) { _ = try SafeTensors.read(path: tiny) }
    }

    func testTruncatedFileIsRefused() throws {
        let folder = try temporaryDirectory(for: self).path
        let path = "\(folder)/full.safetensors"
        try SafeTensors.write([("a", Tensor(shape: [4, 4], floats: (0..<16).map(Float.init))),
                               ("b", Tensor(shape: [8], floats: (0..<8).map(Float.init)))], to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = "\(folder)/cut.safetensors"
        try bytes.prefix(bytes.count - 5).write(to: URL(fileURLWithPath: cut))
        assertThrows(["safetensors file '\(cut)'", "tensor 'b'", "lie outside", "truncated"]) { _ = try SafeTensors.read(path: cut) }
        try bytes.prefix(20).write(to: URL(fileURLWithPath: cut))
        assertThrows(["safetensors file '\(cut)'", "runs past the end of the file"]) { _ = try SafeTensors.read(path: cut) }
    }

    func testWriterRefusesFoldersAndLeavesNoPartialFile() throws {
        let folder = try temporaryDirectory(for: self)
        let directory = folder.appendingPathComponent("adapter_model.safetensors")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        assertThrows(["cannot write '\(directory.path)'", "it is a folder"]) {
            try SafeTensors.write([("x", Tensor(scalar: Float(1)))], to: directory.path)
        }
        let missing = folder.appendingPathComponent("no/such/folder/x.safetensors").path
        assertThrows(["cannot write '\(missing)'", "does not exist"]) {
            try SafeTensors.write([("x", Tensor(scalar: Float(1)))], to: missing)
        }
        assertThrows(["'x' is reserved or repeated"]) {
            try SafeTensors.write([("x", Tensor(scalar: Float(1))), ("x", Tensor(scalar: Float(2)))],
                                  to: folder.appendingPathComponent("y.safetensors").path)
        }
        // Saving an adapter over a file refuses; an adapter folder is never half-written.
        let file = folder.appendingPathComponent("plain").path
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        let modules = try Self.modules("llama-dynamo")
        assertThrows(["cannot write '\(file)'", "not a folder"]) {
            try LoRAAdapter.initialized(modules: modules, configuration: .init(), seed: 1).save(to: file)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(),
                       ["adapter_model.safetensors", "plain"])
    }
}
