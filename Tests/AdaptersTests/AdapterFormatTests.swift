@testable import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// The two adapter formats besides PEFT's: onnxruntime's `.onnx_adapter` FlatBuffer (files written by onnxruntime
/// itself, fixtures/adapter_formats from tools/make_adapter_format_references.py, read to the values it saved; our
/// files read back bit for bit; every truncated, corrupted or malformed file refused with a message naming the file
/// and the parameter) and mlx-lm's adapter folder (PEFT orientation → MLX → back is exact, the files hold exactly
/// the transposes, and MLX's update `scale·(x·lora_a)·lora_b` equals PEFT's `scale·B·A·x`).
final class AdapterFormatTests: XCTestCase {
    static let fixtures = fixturePath("adapter_formats")

    func assertSameContents(_ actual: ONNXAdapterFile.Contents, _ expected: ONNXAdapterFile.Contents, _ message: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.adapterVersion, expected.adapterVersion, message, file: file, line: line)
        XCTAssertEqual(actual.modelVersion, expected.modelVersion, message, file: file, line: line)
        XCTAssertEqual(actual.parameters.map(\.name), expected.parameters.map(\.name), message, file: file, line: line)
        for ((name, tensor), (_, reference)) in zip(actual.parameters, expected.parameters) {
            assertBitIdentical(tensor, reference, "\(message) \(name)", file: file, line: line)
        }
    }

    /// Parses `bytes` as an adapter file named `path`.
    func parse(_ bytes: [UInt8], path: String = "test.onnx_adapter") throws -> ONNXAdapterFile.Contents {
        try bytes.withUnsafeBytes { try ONNXAdapterFile.parse($0, path: path).contents }
    }

    /// Values of every floating-point kind the file holds, with the edge cases of each encoding.
    static func sampleContents() -> ONNXAdapterFile.Contents {
        var generator = SeededGenerator(seed: 5)
        let a = (0..<12).map { _ in Float(generator.nextGaussian()) }
        return ONNXAdapterFile.Contents(parameters: [
            ("model.layers.0.self_attn.q_proj.lora_A.weight", Tensor(shape: [3, 4], floats: a)),
            ("model.layers.0.self_attn.q_proj.lora_B.weight", Tensor(shape: [2, 3], floats: [1, -0.0, .infinity, Float(bitPattern: 0x0000_5555), 1e30, -7])),
            ("half", Tensor(shape: [2, 2], floats: [0.1, -65504, 6e-8, 1.0 / 3].map { halfToFloat(floatToHalf($0)) },
                            dataType: .float16)),
            ("brain", Tensor(shape: [3], floats: [0x3DCD, 0xFF7F, 0x0001].map(bfloat16ToFloat), dataType: .bfloat16)),
            ("double", Tensor(shape: [1, 2], floats: [0.1, -2.5], dataType: .double)),
            ("empty", Tensor(shape: [0, 4], floats: [])),
            ("módulo.λ", Tensor(shape: [1], floats: [42])),
        ], adapterVersion: 42, modelVersion: -3)
    }

    // MARK: onnxruntime's .onnx_adapter

    func testReadsAdaptersWrittenByOnnxruntime() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/reference.json"))
        let reference = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: [String: Any]])
        XCTAssertEqual(Set(reference.keys), ["reference.onnx_adapter", "default_versions.onnx_adapter"])
        for (fileName, expected) in reference {
            let contents = try ONNXAdapterFile.read(path: "\(Self.fixtures)/\(fileName)")
            XCTAssertEqual(expected["format_version"] as? Int, ONNXAdapterFile.formatVersion, fileName)
            XCTAssertEqual(contents.adapterVersion, expected["adapter_version"] as? Int, fileName)
            XCTAssertEqual(contents.modelVersion, expected["model_version"] as? Int, fileName)
            let parameters = try XCTUnwrap(expected["parameters"] as? [String: [String: Any]])
            XCTAssertEqual(Set(contents.parameters.map(\.name)), Set(parameters.keys), fileName)
            XCTAssertEqual(contents.parameters.count, parameters.count, fileName)
            let types: [String: DataType] = ["float32": .float, "float16": .float16, "bfloat16": .bfloat16]
            for (name, parameter) in parameters {
                let dataType = try XCTUnwrap(types[parameter["dtype"] as? String ?? ""], name)
                let dims = try XCTUnwrap(parameter["dims"] as? [Int], name)
                let values = try XCTUnwrap(parameter["values"] as? [NSNumber], name).map { Float($0.doubleValue) }
                assertBitIdentical(contents[name], Tensor(shape: dims, floats: values, dataType: dataType), "\(fileName) \(name)")
            }
        }
        // -0.0 keeps its sign through the JSON as through the file.
        let contents = try ONNXAdapterFile.read(path: "\(Self.fixtures)/reference.onnx_adapter")
        XCTAssertEqual(contents["half"]?.floats.last?.sign, .minus)
    }

    func testOurFilesReadBackBitForBitAndAlignRawData() throws {
        let folder = try temporaryDirectory(for: self)
        let path = folder.appendingPathComponent("adapter.\(ONNXAdapterFile.fileExtension)").path
        let contents = Self.sampleContents()
        try ONNXAdapterFile.write(contents, to: path)
        assertSameContents(try ONNXAdapterFile.read(path: path), contents, "round trip")

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[4..<8]), Array("TORT".utf8))
        XCTAssertEqual(bytes.count % 8, 0, "the buffer is padded to its largest alignment")
        let offsets = try bytes.withUnsafeBytes { try ONNXAdapterFile.parse($0, path: path).rawDataOffsets }
        XCTAssertEqual(offsets.count, contents.parameters.count)
        XCTAssertEqual(offsets.filter { $0 % ONNXAdapterFile.rawDataAlignment != 0 }, [], "raw_data keeps force_align: 8")

        // Writing what was read gives the same bytes: nothing depends on anything but the contents.
        let again = folder.appendingPathComponent("again.onnx_adapter").path
        try ONNXAdapterFile.write(try ONNXAdapterFile.read(path: path), to: again)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: again))), bytes)

        // No parameters at all is a valid adapter.
        try ONNXAdapterFile.write(ONNXAdapterFile.Contents(parameters: []), to: again)
        let empty = try ONNXAdapterFile.read(path: again)
        XCTAssertTrue(empty.parameters.isEmpty)
        XCTAssertEqual(empty.adapterVersion, 0)
    }

    func testOnnxruntimesFileRewrittenByUsKeepsEveryValue() throws {
        let original = try ONNXAdapterFile.read(path: "\(Self.fixtures)/reference.onnx_adapter")
        let path = try temporaryDirectory(for: self).appendingPathComponent("rewritten.onnx_adapter").path
        try ONNXAdapterFile.write(original, to: path)
        assertSameContents(try ONNXAdapterFile.read(path: path), original, "rewritten")
    }

    func testOtherFilesAndWrongIdentifiersAreRefused() throws {
        let folder = try temporaryDirectory(for: self)
        let valid = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/reference.onnx_adapter")))
        var wrong = valid
        wrong[7] = UInt8(ascii: "X")
        assertThrows(["x.onnx_adapter", "\"TORX\"", "not \"TORT\"", "not an onnxruntime adapter"]) {
            try self.parse(wrong, path: "x.onnx_adapter")
        }
        assertThrows(["file identifier", "00 00 00 00"]) { try self.parse([UInt8](repeating: 0, count: 64)) }
        assertThrows(["0 bytes", "truncated"]) { try self.parse([]) }
        assertThrows(["8 bytes", "truncated"]) { try self.parse(Array(valid.prefix(8))) }

        // A safetensors file handed over by mistake.
        let safetensors = folder.appendingPathComponent("weights.safetensors").path
        try SafeTensors.write([("x", Tensor(shape: [1], floats: [1]))], to: safetensors)
        assertThrows(["weights.safetensors", "not an onnxruntime adapter"]) { try ONNXAdapterFile.read(path: safetensors) }

        let missing = folder.appendingPathComponent("missing.onnx_adapter").path
        XCTAssertThrowsError(try ONNXAdapterFile.read(path: missing)) { error in
            XCTAssertEqual(error as? AdapterError, .adapterNotFound(path: missing))
        }
    }

    func testEveryTruncationIsRefusedOrChangesNothing() throws {
        let folder = try temporaryDirectory(for: self)
        let ours = folder.appendingPathComponent("ours.onnx_adapter").path
        try ONNXAdapterFile.write(Self.sampleContents(), to: ours)
        for path in [ours, "\(Self.fixtures)/reference.onnx_adapter"] {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let complete = try parse(bytes)
            let lastValue = try bytes.withUnsafeBytes { buffer in
                let parsed = try ONNXAdapterFile.parse(buffer, path: path)
                return zip(parsed.rawDataOffsets, parsed.contents.parameters).map { offset, parameter in
                    offset + parameter.tensor.count * (parameter.tensor.dataType.byteWidth ?? 4)
                }.max() ?? 0
            }
            var refused = 0
            for length in 0..<bytes.count {
                do {
                    // Only padding after the last value may be cut without consequence.
                    assertSameContents(try parse(Array(bytes.prefix(length))), complete, "\(path) cut to \(length) bytes")
                    XCTAssertGreaterThanOrEqual(length, lastValue, "\(path) cut to \(length) bytes still parses")
                } catch let error as AdapterError {
                    guard case .invalidAdapter = error else { return XCTFail("\(path) cut to \(length): \(error)") }
                    refused += 1
                }
            }
            XCTAssertGreaterThanOrEqual(refused, lastValue, path)
        }
        let half = [UInt8](try Data(contentsOf: URL(fileURLWithPath: ours))).prefix(200)
        assertThrows(["test.onnx_adapter", "past the end of the file", "truncated"]) { try self.parse(Array(half)) }
    }

    func testCorruptedBytesAreRefusedWithoutCrashing() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/reference.onnx_adapter")))
        var refused = 0
        for index in bytes.indices {
            for flip: UInt8 in [0xFF, 0x80, 0x01] {
                var corrupted = bytes
                corrupted[index] ^= flip
                do {
                    _ = try parse(corrupted)
                } catch is AdapterError {
                    refused += 1
                }
            }
        }
        // Value bytes may change freely; the structure may not.
        XCTAssertGreaterThan(refused, bytes.count)
    }

    func testMalformedParametersAreRefusedNamingFileAndParameter() throws {
        typealias Parameter = ONNXAdapterFile.Parameter
        let float = DataType.float.rawValue
        let good = Parameter(name: "p", dims: [2], dataType: float, rawData: [UInt8](repeating: 0, count: 8))
        func file(_ parameters: [Parameter]?, formatVersion: Int32 = 1) -> [UInt8] {
            ONNXAdapterFile.encode(formatVersion: formatVersion, adapterVersion: 0, modelVersion: 0, parameters: parameters)
        }
        XCTAssertEqual(try parse(file([good]))["p"]?.floats, [0, 0], "the base case is valid")

        func refused(_ parameters: [Parameter]?, formatVersion: Int32 = 1, _ fragments: [String], line: UInt = #line) {
            assertThrows(["bad.onnx_adapter"] + fragments, line: line) {
                try self.parse(file(parameters, formatVersion: formatVersion), path: "bad.onnx_adapter")
            }
        }
        var parameter = good
        parameter.name = nil
        refused([good, parameter], ["parameter #1 has no name"])
        parameter.name = ""
        refused([parameter], ["parameter #0 has an empty name"])
        refused([good, good], ["parameter 'p' appears twice"])
        parameter = good
        parameter.dims = nil
        refused([parameter], ["parameter 'p' has no dims"])
        parameter.dims = []
        refused([parameter], ["parameter 'p' has empty dims", "scalars"])
        parameter.dims = [-2]
        refused([parameter], ["parameter 'p' has dims [-2]"])
        parameter.dims = [1 << 30, 1 << 30]
        refused([parameter], ["parameter 'p' has dims", "more values than the file can hold"])
        parameter.dims = [3]
        refused([parameter], ["parameter 'p' has 8 bytes of raw_data, but float32 [3] needs 12"])
        parameter = good
        parameter.rawData = nil
        refused([parameter], ["parameter 'p' has no raw_data"])
        parameter = good
        parameter.dataType = DataType.int64.rawValue
        refused([parameter], ["is not supported", "parameter 'p' is int64", "floating-point"])
        parameter.dataType = 0
        refused([parameter], ["parameter 'p' has data_type 0"])
        parameter.dataType = 99
        refused([parameter], ["parameter 'p' has data_type 99"])
        refused([good], formatVersion: 2, ["is not supported", "format_version is 2", "only version 1"])
        refused(nil, ["no parameters vector"])

        // A table whose vtable points outside the file.
        var bytes = file([good])
        bytes.replaceSubrange(8..<10, with: [0xFF, 0x7F])
        XCTAssertThrowsError(try parse(bytes))
    }

    func testFailedWritesLeaveNothingBehind() throws {
        let folder = try temporaryDirectory(for: self)
        let path = folder.appendingPathComponent("adapter.onnx_adapter").path
        func refused(_ contents: ONNXAdapterFile.Contents, _ fragments: [String], line: UInt = #line) {
            assertThrows(["cannot write", path] + fragments, line: line) { try ONNXAdapterFile.write(contents, to: path) }
        }
        func one(_ name: String, _ tensor: Tensor) -> ONNXAdapterFile.Contents { .init(parameters: [(name, tensor)]) }
        refused(one("ids", Tensor(shape: [2], int64s: [1, 2])), ["parameter 'ids' is int64", "only float32"])
        refused(one("s", Tensor(scalar: Float(1))), ["parameter 's' is a scalar"])
        refused(one("", Tensor(shape: [1], floats: [1])), ["empty name"])
        var inconsistent = Tensor(shape: [1], floats: [1])
        inconsistent.shape = [3]
        refused(one("bad", inconsistent), ["parameter 'bad' has shape [3] but 1 values"])
        refused(.init(parameters: [("p", Tensor(shape: [1], floats: [1])), ("p", Tensor(shape: [1], floats: [2]))]),
                ["parameter name 'p' is repeated"])
        refused(.init(parameters: [], adapterVersion: Int(Int32.max) + 1), ["must fit in Int32"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [], "no file, no temporary file")

        // A failed write leaves an existing file as it was.
        try ONNXAdapterFile.write(Self.sampleContents(), to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        refused(one("ids", Tensor(shape: [2], int64s: [1, 2])), ["int64"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["adapter.onnx_adapter"])

        assertThrows(["cannot write", "does not exist"]) {
            try ONNXAdapterFile.write(Self.sampleContents(), to: folder.appendingPathComponent("no/such/folder.onnx_adapter").path)
        }
        assertThrows(["cannot write", "it is a folder"]) { try ONNXAdapterFile.write(Self.sampleContents(), to: folder.path) }
    }

    // MARK: mlx-lm's adapter folder

    /// A hand-built module: a MatMul weight `[in, out]`, every output trainable, or for a fused projection only
    /// `trainable`.
    static func module(_ path: String, in inputs: Int, out outputs: Int, layer: Int, trainable: [Range<Int>]? = nil) -> LoRAModule {
        let layout: LoRATarget.Layout = trainable.map { .fused(storage: .matMul, columns: $0) } ?? .matMul
        let columns = layout.columns(outOf: outputs)
        let target = LoRATarget(modulePath: path, kind: trainable == nil ? .q : .v, node: "/\(path)/MatMul",
                                weight: "\(path).weight", layer: layer, inFeatures: inputs, outFeatures: columns.count,
                                layout: layout)
        return LoRAModule(modulePath: path, node: target.node, weight: target.weight, inFeatures: inputs, outFeatures: outputs,
                          trainableOutputs: columns, targets: [target])
    }

    static let llamaModules = [
        module("model.layers.0.self_attn.q_proj", in: 6, out: 4, layer: 0),
        module("model.layers.0.self_attn.v_proj", in: 6, out: 2, layer: 0),
        module("model.layers.1.self_attn.q_proj", in: 6, out: 4, layer: 1),
        module("model.layers.1.self_attn.v_proj", in: 6, out: 2, layer: 1),
    ]

    /// GPT-2's fused `c_attn` (q, k, v of 4 features each) with q and v adapted, k frozen; and the output head.
    static let fusedModules = [
        module("transformer.h.0.attn.c_attn", in: 4, out: 12, layer: 0, trainable: [0..<4, 8..<12]),
        module("transformer.h.1.attn.c_attn", in: 4, out: 12, layer: 1, trainable: [0..<4, 8..<12]),
        module("lm_head", in: 4, out: 10, layer: 1),
    ]

    func testMLXRoundTripKeepsMatricesAndScale() throws {
        let cases: [([LoRAModule], LoRAConfiguration)] = [
            (Self.llamaModules, LoRAConfiguration(rank: 4, alpha: 8)),
            (Self.llamaModules, LoRAConfiguration(rank: 3, alpha: 7.5, dropout: 0.05, useRSLoRA: true, initialization: .gaussian)),
            (Self.fusedModules, LoRAConfiguration(rank: 2, alpha: 16, dropout: 0.1)),
        ]
        for (index, (modules, configuration)) in cases.enumerated() {
            let adapter = PEFTAdapterTests.adapter(modules, configuration, seed: UInt64(20 + index))
            let folder = try temporaryDirectory(for: self).appendingPathComponent("nested/mlx").path
            try adapter.save(to: folder, format: .mlx)
            let loaded = try AdapterFolder.read(folder, modules: modules)
            XCTAssertEqual(loaded.configuration.rank, configuration.rank)
            XCTAssertEqual(loaded.configuration.scale, configuration.scale, accuracy: 1e-12 * configuration.scale, "case \(index)")
            XCTAssertEqual(loaded.configuration.alpha, configuration.scale * Double(configuration.rank))
            XCTAssertFalse(loaded.configuration.useRSLoRA)
            XCTAssertEqual(loaded.configuration.dropout.bitPattern, configuration.dropout.bitPattern)
            XCTAssertEqual(loaded.modules, modules)
            for module in modules {
                assertBitIdentical(loaded.a[module.modulePath], adapter.a[module.modulePath], "case \(index) A \(module.modulePath)")
                assertBitIdentical(loaded.b[module.modulePath], adapter.b[module.modulePath], "case \(index) B \(module.modulePath)")
            }
            // Saving the loaded adapter again gives the same files.
            let again = try temporaryDirectory(for: self).path
            try loaded.save(to: again, format: .mlx)
            for name in [MLXAdapter.weightsFileName, MLXAdapter.configurationFileName] {
                XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(again)/\(name)")),
                               try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(name)")), name)
            }
        }
    }

    func testMLXFilesHoldTheTransposesAndMLXsConfiguration() throws {
        let configuration = LoRAConfiguration(rank: 3, alpha: 12, dropout: 0.05, useRSLoRA: true)
        let adapter = PEFTAdapterTests.adapter(Self.llamaModules, configuration, seed: 3)
        let folder = try temporaryDirectory(for: self).path
        try adapter.save(to: folder, format: .mlx)

        let file = try SafeTensors.read(path: "\(folder)/adapters.safetensors")
        XCTAssertEqual(file.metadata, ["format": "mlx"])
        XCTAssertEqual(Set(file.tensors.map(\.name)), Set(Self.llamaModules.flatMap { ["\($0.modulePath).lora_a", "\($0.modulePath).lora_b"] }))
        for module in Self.llamaModules {
            let a = try XCTUnwrap(adapter.a[module.modulePath]), b = try XCTUnwrap(adapter.b[module.modulePath])
            let loraA = try XCTUnwrap(file["\(module.modulePath).lora_a"]), loraB = try XCTUnwrap(file["\(module.modulePath).lora_b"])
            XCTAssertEqual(loraA.shape, [module.inFeatures, 3])
            XCTAssertEqual(loraB.shape, [3, module.outFeatures])
            XCTAssertEqual(loraA.dataType, .float)
            for r in 0..<3 {
                for input in 0..<module.inFeatures {
                    XCTAssertEqual(loraA.floats[input * 3 + r].bitPattern, a.floats[r * module.inFeatures + input].bitPattern)
                }
                for output in 0..<module.outFeatures {
                    XCTAssertEqual(loraB.floats[r * module.outFeatures + output].bitPattern, b.floats[output * 3 + r].bitPattern)
                }
            }
        }

        let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_config.json"))
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(Set(config.keys), ["fine_tune_type", "num_layers", "lora_parameters"])
        XCTAssertEqual(config["fine_tune_type"] as? String, "lora")
        XCTAssertEqual(config["num_layers"] as? Int, 2)
        let parameters = try XCTUnwrap(config["lora_parameters"] as? [String: Any])
        XCTAssertEqual(Set(parameters.keys), ["rank", "scale", "dropout", "keys"])
        XCTAssertEqual(parameters["rank"] as? Int, 3)
        XCTAssertEqual(parameters["scale"] as? Double, configuration.scale, "rsLoRA's alpha/√r, the scale MLX applies")
        XCTAssertEqual(parameters["dropout"] as? Double, 0.05)
        XCTAssertEqual(parameters["keys"] as? [String], ["self_attn.q_proj", "self_attn.v_proj"])
    }

    /// mlx-lm's LoRALinear adds `scale·((x·lora_a)·lora_b)` to `x·Wᵀ`; computed from the files, that must be PEFT's
    /// `scale·B·(A·x)` computed from the adapter.
    func testMLXUpdateFromTheFilesEqualsPEFTsUpdate() throws {
        let configuration = LoRAConfiguration(rank: 2, alpha: 5)
        let adapter = PEFTAdapterTests.adapter(Self.fusedModules, configuration, seed: 9)
        let folder = try temporaryDirectory(for: self).path
        try adapter.save(to: folder, format: .mlx)
        let file = try SafeTensors.read(path: "\(folder)/adapters.safetensors")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_config.json")))
        let scale = Float(try XCTUnwrap(((config as? [String: Any])?["lora_parameters"] as? [String: Any])?["scale"] as? Double))
        var generator = SeededGenerator(seed: 4)
        for module in Self.fusedModules {
            let (inputs, outputs, rank) = (module.inFeatures, module.outFeatures, configuration.rank)
            let x = (0..<inputs).map { _ in Float(generator.nextGaussian()) }
            let loraA = try XCTUnwrap(file["\(module.modulePath).lora_a"]).floats
            let loraB = try XCTUnwrap(file["\(module.modulePath).lora_b"]).floats
            let xa = (0..<rank).map { r in (0..<inputs).reduce(Float(0)) { $0 + x[$1] * loraA[$1 * rank + r] } }
            let mlx = (0..<outputs).map { o in scale * (0..<rank).reduce(Float(0)) { $0 + xa[$1] * loraB[$1 * outputs + o] } }
            let a = try XCTUnwrap(adapter.a[module.modulePath]).floats, b = try XCTUnwrap(adapter.b[module.modulePath]).floats
            let ax = (0..<rank).map { r in (0..<inputs).reduce(Float(0)) { $0 + a[r * inputs + $1] * x[$1] } }
            let peft = (0..<outputs).map { o in Float(configuration.scale) * (0..<rank).reduce(Float(0)) { $0 + b[o * rank + $1] * ax[$1] } }
            assertClose(Tensor(shape: [outputs], floats: mlx), Tensor(shape: [outputs], floats: peft), relative: 1e-5, absolute: 1e-6,
                        module.modulePath)
            let frozen = Set(0..<outputs).subtracting(module.trainableOutputs)
            XCTAssertEqual(frozen.filter { mlx[$0] != 0 }, [], "\(module.modulePath): the frozen k features stay unchanged")
        }
    }

    func testNumLayersAndKeysFollowMLXsBlocks() throws {
        XCTAssertTrue(MLXAdapter.blockKey("model.layers.12.self_attn.q_proj") == (12, "self_attn.q_proj"))
        XCTAssertTrue(MLXAdapter.blockKey("transformer.h.3.attn.c_attn") == (3, "attn.c_attn"))
        XCTAssertTrue(MLXAdapter.blockKey("gpt_neox.layers.0.attention.query_key_value") == (0, "attention.query_key_value"))
        XCTAssertTrue(MLXAdapter.blockKey("lm_head") == (nil, "lm_head"))
        XCTAssertEqual(MLXAdapter.keys(Self.fusedModules.map(\.modulePath)), ["attn.c_attn", "lm_head"])

        let paths = (2..<4).map { "model.layers.\($0).mlp.down_proj" }
        XCTAssertEqual(MLXAdapter.numberOfLayers(Self.llamaModules.map(\.modulePath), layerCount: nil), 2, "every block adapted")
        XCTAssertEqual(MLXAdapter.numberOfLayers(paths, layerCount: nil), 2, "the last blocks adapted")
        XCTAssertEqual(MLXAdapter.numberOfLayers(paths, layerCount: 6), 4, "blocks 2 and 3 of 6: wrap the last 4")
        XCTAssertEqual(MLXAdapter.numberOfLayers(["lm_head"], layerCount: nil), 0)

        let adapter = PEFTAdapterTests.adapter(Self.llamaModules, LoRAConfiguration(rank: 2, alpha: 4), seed: 1)
        let folder = try temporaryDirectory(for: self).path
        try adapter.save(to: folder, format: .mlx, context: AdapterSaveContext(layerCount: 5))
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(folder)/adapter_config.json")))
        XCTAssertEqual((config as? [String: Any])?["num_layers"] as? Int, 5)
        assertThrows(["cannot write", "layerCount 1 is not above the highest adapted block, 1"]) {
            try adapter.save(to: folder, format: .mlx, context: AdapterSaveContext(layerCount: 1))
        }
        let file = try temporaryDirectory(for: self).appendingPathComponent("file").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data()))
        assertThrows(["cannot write", "not a folder"]) { try adapter.save(to: file, format: .mlx) }
    }

    func testBadMLXFoldersAreRefusedNamingTheProblem() throws {
        let modules = Self.fusedModules
        let configuration = LoRAConfiguration(rank: 2, alpha: 4)
        let adapter = PEFTAdapterTests.adapter(modules, configuration, seed: 2)
        let root = try temporaryDirectory(for: self)
        var count = 0
        /// A saved folder, then `edit` applied to its tensors and its config object.
        func folder(tensors edit: (inout [(name: String, tensor: Tensor)]) -> Void = { _ in },
                    config editConfig: (inout [String: Any]) -> Void = { _ in }) throws -> String {
            count += 1
            let path = root.appendingPathComponent("case\(count)").path
            try adapter.save(to: path, format: .mlx)
            var tensors = try SafeTensors.read(path: "\(path)/adapters.safetensors").tensors
            edit(&tensors)
            try SafeTensors.write(tensors, metadata: ["format": "mlx"], to: "\(path)/adapters.safetensors")
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(path)/adapter_config.json"))
            var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            editConfig(&config)
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(path)/adapter_config.json"))
            return path
        }
        func refused(_ path: String, _ fragments: [String], line: UInt = #line) {
            assertThrows(fragments, line: line) { try AdapterFolder.read(path, modules: modules) }
        }
        XCTAssertNoThrow(try AdapterFolder.read(try folder(), modules: modules), "the unedited folder loads")

        let missingFolder = root.appendingPathComponent("none").path
        refused(missingFolder, ["'\(missingFolder)' does not exist"])
        let noConfig = try folder()
        try FileManager.default.removeItem(atPath: "\(noConfig)/adapter_config.json")
        refused(noConfig, ["\(noConfig)/adapter_config.json' does not exist"])
        let noWeights = try folder()
        try FileManager.default.removeItem(atPath: "\(noWeights)/adapters.safetensors")
        refused(noWeights, ["\(noWeights)/adapters.safetensors' does not exist"])

        refused(try folder(config: { $0["fine_tune_type"] = "dora" }), ["is not supported", "fine_tune_type is \"dora\""])
        refused(try folder(config: { $0["fine_tune_type"] = "full" }), ["is not supported", "fine_tune_type is \"full\"", "whole"])
        refused(try folder(config: { $0["fine_tune_type"] = "ia3" }), ["fine_tune_type is \"ia3\"", "only \"lora\""])
        refused(try folder(config: { $0["use_dora"] = true }), ["use_dora is true"])
        refused(try folder(config: { $0["lora_parameters"] = nil }), ["adapter_config.json", "no \"lora_parameters\""])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 2] }), ["\"scale\" is not a finite number"])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 0, "scale": 2] }), ["\"rank\" is not a positive integer"])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": true, "scale": 2] }), ["\"rank\" is not a positive integer"])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 2.5, "scale": 2] }), ["\"rank\" is not a positive integer"])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 2, "scale": false] }), ["\"scale\" is not a finite number"])
        refused(try folder(config: { $0["num_layers"] = "all" }), ["\"num_layers\" is not an integer"])
        // 0 and 1 are numbers, not booleans (JSONSerialization's NSNumber would pass `is Bool` for them).
        let ones = try AdapterFolder.read(try folder(config: {
            $0["num_layers"] = 1
            $0["lora_parameters"] = ["rank": 2, "scale": 1, "dropout": 0]
        }), modules: modules)
        XCTAssertEqual(ones.configuration, LoRAConfiguration(rank: 2, alpha: 2, dropout: 0))
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 2, "scale": 2, "keys": ["attn.c_attn"]] }),
                ["keys\" does not list 'lm_head'", "mlx-lm would not apply 'lm_head.lora_"])
        let notJSON = try folder()
        try Data("{".utf8).write(to: URL(fileURLWithPath: "\(notJSON)/adapter_config.json"))
        refused(notJSON, ["not valid JSON"])

        let bKey = "transformer.h.1.attn.c_attn.lora_b"
        refused(try folder(tensors: { $0.removeAll { $0.name == bKey } }),
                ["adapters.safetensors", "module 'transformer.h.1.attn.c_attn'", "has no '\(bKey)'"])
        refused(try folder(tensors: { $0.append(("model.layers.7.mlp.up_proj.lora_a", Tensor(shape: [4, 2], floats: .init(repeating: 0, count: 8)))) }),
                ["module 'model.layers.7.mlp.up_proj'", "not among the model's adapted modules"])
        refused(try folder(tensors: { $0.append(("lm_head.weight", Tensor(shape: [1], floats: [0]))) }),
                ["'lm_head.weight' is not an MLX LoRA weight"])
        refused(try folder(tensors: { tensors in
            let index = tensors.firstIndex { $0.name == "lm_head.lora_a" }!
            tensors[index].tensor = transposed(tensors[index].tensor)  // PEFT's [r, in] by mistake
        }), ["'lm_head.lora_a' has shape [2, 4], but the model needs [4, 2]"])
        refused(try folder(config: { $0["lora_parameters"] = ["rank": 3, "scale": 2] }),
                ["has shape [4, 2], but the model needs [4, 3]"])
        refused(try folder(tensors: { tensors in
            let index = tensors.firstIndex { $0.name == bKey }!
            var values = tensors[index].tensor.floats
            values[1 * 12 + 5] = 0.5  // rank 1, output 5: a k feature
            tensors[index].tensor = Tensor(shape: [2, 12], floats: values)
        }), ["module 'transformer.h.1.attn.c_attn'", "nonzero lora_b columns", "(first: 5)"])
    }
}
