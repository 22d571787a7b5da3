import Adapters
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// LoRA target discovery on every fixture export: the q and v projections found by structure carry the Hugging
/// Face module paths, and the weight values they adapt are exactly the torch q and v weights
/// (`tools/make_lora_target_references.py` writes `fixtures/lora_targets/lora_targets.json` from the rebuilt torch models).
final class LoRATargetTests: XCTestCase {
    struct References: Decodable {
        struct Part: Decodable {
            var module_path: String
            var shape: [Int]
            var first: [Float]
            var sum: Double
            var row_weighted_sum: Double
            var column_weighted_sum: Double
        }
        struct Export: Decodable {
            var architecture: String
            var layers: [[String: Part]]
        }
        var fixtures: [String: Export]
    }

    static func references() throws -> References {
        let path = fixturePath("lora_targets/lora_targets.json")
        return try JSONDecoder().decode(References.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// The values `target` adapts, in PEFT's `[out, in]` orientation, read from the initializer it names.
    static func adaptedWeight(_ target: LoRATarget, in model: Model) throws -> Tensor {
        let initializer = try XCTUnwrap(model.graph.initializers.first { $0.name == target.weight },
                                        "no initializer '\(target.weight)'")
        let weight = try model.loadTensor(initializer)
        return try XCTUnwrap(target.peftWeight(from: weight), "\(target): weight \(weight.shape) does not fit")
    }

    // MARK: - Every fixture

    func testEveryFixtureHasOneQAndOneVPerLayerWithHuggingFaceModulePaths() throws {
        let fixtures = try ExportFixture.all()
        let references = try Self.references()
        XCTAssertEqual(fixtures.count, 12)
        for fixture in fixtures {
            let reference = try XCTUnwrap(references.fixtures[fixture.name], "no reference for \(fixture.name)")
            let targets = try LoRATargets.find(in: try fixture.model())
            XCTAssertEqual(targets.count, 2 * reference.layers.count, fixture.name)
            XCTAssertEqual(reference.layers.count, 2, fixture.name)
            for (layer, parts) in reference.layers.enumerated() {
                for kind in [LoRATarget.Kind.q, .v] {
                    let found = targets.filter { $0.layer == layer && $0.kind == kind }
                    XCTAssertEqual(found.count, 1, "\(fixture.name) layer \(layer) \(kind): \(found)")
                    let expected = try XCTUnwrap(parts[kind.rawValue])
                    XCTAssertEqual(found.first?.modulePath, expected.module_path, "\(fixture.name) layer \(layer) \(kind)")
                }
            }
            XCTAssertEqual(targets.map(\.layer), [0, 0, 1, 1], fixture.name)
            XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v], fixture.name)
        }
    }

    /// The real proof: the initializer each target names, cut by its layout and turned to `[out, in]`, holds the
    /// torch weight of exactly the q (or v) projection.
    func testAdaptedWeightsAreTheTorchQAndVWeights() throws {
        let references = try Self.references()
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let reference = try XCTUnwrap(references.fixtures[fixture.name])
            for target in try LoRATargets.find(in: model) {
                let expected = try XCTUnwrap(reference.layers[target.layer][target.kind.rawValue])
                let label = "\(fixture.name) layer \(target.layer) \(target.kind)"
                let part = try Self.adaptedWeight(target, in: model)
                XCTAssertEqual(part.shape, expected.shape, label)
                XCTAssertEqual([target.outFeatures, target.inFeatures], expected.shape, label)
                let values = part.floats
                for (index, value) in expected.first.enumerated() {
                    XCTAssertEqual(values[index], value, accuracy: 1e-6, "\(label) value \(index)")
                }
                let columns = part.shape[1]
                var sum = 0.0, rowWeighted = 0.0, columnWeighted = 0.0
                for (index, value) in values.enumerated() {
                    sum += Double(value)
                    rowWeighted += Double(index / columns + 1) * Double(value)
                    columnWeighted += Double(index % columns + 1) * Double(value)
                }
                XCTAssertEqual(sum, expected.sum, accuracy: 1e-6, "\(label) sum")
                XCTAssertEqual(rowWeighted, expected.row_weighted_sum, accuracy: 1e-6, "\(label) row-weighted sum")
                XCTAssertEqual(columnWeighted, expected.column_weighted_sum, accuracy: 1e-6, "\(label) column-weighted sum")
            }
        }
    }

    /// How each architecture stores its q and v weights, as DESIGN.md describes the exports.
    func testLayoutsOfEachArchitecture() throws {
        for fixture in try ExportFixture.all() {
            let targets = try LoRATargets.find(in: try fixture.model())
            for target in targets {
                let label = "\(fixture.name) \(target)"
                XCTAssertEqual(target.inFeatures, 64, label)
                switch fixture.architecture {
                case "gpt2":
                    // Conv1D c_attn: Gemm on [C, 3C], split into three contiguous column blocks.
                    let columns = target.kind == .q ? 0..<64 : 128..<192
                    XCTAssertEqual(target.layout, .fused(storage: .gemm(transB: false), columns: [columns]), label)
                    XCTAssertEqual(target.bias, "model.transformer.h.\(target.layer).attn.c_attn.bias", label)
                case "llama", "qwen2":
                    XCTAssertEqual(target.layout, .matMul, label)
                    XCTAssertEqual(target.outFeatures, target.kind == .q ? 64 : 32, label)  // 2 KV heads of 4
                    if fixture.architecture == "qwen2" {
                        XCTAssertEqual(target.bias, "model.model.layers.\(target.layer).self_attn.\(target.kind)_proj.bias", label)
                    } else {
                        XCTAssertNil(target.bias, label)
                    }
                case "gpt-neox":
                    // [.., heads, 3·d] per head: q, k, v interleaved, 4 heads of 16.
                    let offset = target.kind == .q ? 0 : 32
                    let columns = (0..<4).map { head in (head * 48 + offset)..<(head * 48 + offset + 16) }
                    XCTAssertEqual(target.layout, .fused(storage: .matMul, columns: columns), label)
                    XCTAssertEqual(target.bias, "model.gpt_neox.layers.\(target.layer).attention.query_key_value.bias", label)
                case "phi3":
                    let columns = target.kind == .q ? 0..<64 : 128..<192
                    XCTAssertEqual(target.layout, .fused(storage: .matMul, columns: [columns]), label)
                    XCTAssertNil(target.bias, label)
                default:
                    XCTFail("unexpected architecture \(fixture.architecture)")
                }
            }
        }
    }

    // MARK: - Other kinds and --target patterns

    func testEveryLinearLayerOfLlamaIsFoundAndLabelled() throws {
        let fixture = try ExportFixture.named("llama-torchscript")
        let targets = try LoRATargets.find(in: try fixture.model(), kinds: Set(LoRATarget.Kind.allCases))
        var expected: [String] = []
        for layer in 0..<2 {
            expected += ["q_proj", "k_proj", "v_proj", "o_proj"].map { "model.layers.\(layer).self_attn.\($0)" }
            expected += ["gate_proj", "up_proj", "down_proj"].map { "model.layers.\(layer).mlp.\($0)" }
        }
        expected.append("lm_head")
        XCTAssertEqual(targets.map(\.modulePath), expected)
        XCTAssertEqual(targets.map(\.kind), [.q, .k, .v, .o, .mlp, .mlp, .mlp, .q, .k, .v, .o, .mlp, .mlp, .mlp, .other])
        XCTAssertEqual(targets.map(\.layer), [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
        XCTAssertEqual(targets.first { $0.kind == .k }?.outFeatures, 32)
        XCTAssertEqual(targets.last?.outFeatures, 512)
    }

    func testTargetPatterns() throws {
        let fixtures = try ExportFixture.all()
        let llama = try XCTUnwrap(fixtures.first { $0.name == "llama-dynamo" }).model()
        func paths(_ patterns: [String]) throws -> [String] {
            try LoRATargets.find(in: llama, matching: patterns).map(\.modulePath)
        }
        XCTAssertEqual(try LoRATargets.find(in: llama, matching: ["q", "v"]), try LoRATargets.find(in: llama))
        XCTAssertEqual(try paths(["q_proj"]), ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"])
        XCTAssertEqual(try paths(["self_attn.o_proj"]), ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"])
        XCTAssertEqual(try paths([#".*\.(k|v)_proj"#]), ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
                                                         "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"])
        XCTAssertEqual(try paths(["model.layers.1.mlp.*"]), ["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
                                                             "model.layers.1.mlp.down_proj"])
        XCTAssertEqual(try paths(["k", "o"]).count, 4)
        XCTAssertEqual(try paths(["mlp"]).count, 6)
        // PEFT's all-linear: every linear layer of the blocks, not the output head.
        XCTAssertEqual(try paths(["all-linear"]).count, 14)
        XCTAssertFalse(try paths(["all-linear"]).contains("lm_head"))

        assertThrows(["no LoRA targets in", "llama-dynamo/model.onnx", "no projection matches the target patterns nonexistent",
                      "model.layers.0.self_attn.q_proj"]) {
            try LoRATargets.find(in: llama, matching: ["nonexistent"])
        }
        assertThrows(["target pattern '(q'", "not a regular expression"]) { try LoRATargets.find(in: llama, matching: ["(q"]) }

        // A fused projection is matched part by part.
        let gpt2 = try XCTUnwrap(fixtures.first { $0.name == "gpt2-torchscript" }).model()
        let fused = try LoRATargets.find(in: gpt2, matching: ["c_attn"])
        XCTAssertEqual(fused.map(\.kind), [.q, .k, .v, .q, .k, .v])
        XCTAssertEqual(Set(fused.map(\.modulePath)), ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"])
        XCTAssertEqual(try LoRATargets.find(in: gpt2, matching: ["o"]).map(\.modulePath),
                       ["transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_proj"])
        XCTAssertEqual(try LoRATargets.find(in: gpt2, matching: ["transformer.h.?.mlp.c_*"]).count, 4)
    }

    func testGlobs() {
        let cases: [(String, String, Bool)] = [
            ("*.q_proj", "model.layers.0.self_attn.q_proj", true), ("*q_proj", "model.layers.0.self_attn.k_proj", false),
            ("model.layers.?.mlp.*", "model.layers.3.mlp.up_proj", true), ("model.layers.?.mlp.*", "model.layers.12.mlp.up_proj", false),
            ("*", "", true), ("a*b*c", "aXbYc", true), ("a*b*c", "aXbY", false),
            ("glob:a.(b)", "a.(b)", true), ("re:a.b", "aXb", true), (".*_proj", "model.layers.0.self_attn.q_proj", true),
            (#"model\.layers\.\d+\.mlp\..*"#, "model.layers.12.mlp.up_proj", true),
        ]
        for (pattern, path, expected) in cases {
            let target = LoRATarget(modulePath: path, kind: .other, node: "n", weight: "w", layer: 0, inFeatures: 1,
                                    outFeatures: 1, layout: .matMul)
            XCTAssertEqual(try LoRATargetPattern(pattern).matches(target), expected, "\(pattern) on \(path)")
        }
    }

    // MARK: - Forms no fixture export has

    /// A hand-built block: q, k and v fused in one Gemm with `transB = 1` (`[out, in]`), per-head interleaved,
    /// split by a Split with a negative axis; output projection as MatMul + Add(bias); no names to label it.
    func testFusedGemmWithTransposedWeight() throws {
        let model = try Model.load(path: fixturePath("lora_targets/attention_gemm_transb.onnx"))
        let targets = try LoRATargets.find(in: model, kinds: [.q, .k, .v, .o])
        XCTAssertEqual(targets.map(\.kind), [.q, .k, .v, .o])
        XCTAssertEqual(targets.map(\.modulePath), ["layers.0.attention.qkv", "layers.0.attention.qkv",
                                                   "layers.0.attention.qkv", "layers.0.attention.o"])
        for (target, offset) in zip(targets.prefix(3), [0, 4, 8]) {
            XCTAssertEqual(target.node, "qkv_gemm")
            XCTAssertEqual(target.weight, "qkv_weight")
            XCTAssertEqual(target.bias, "qkv_bias")
            XCTAssertEqual(target.layout, .fused(storage: .gemm(transB: true), columns: [offset..<(offset + 4), (offset + 12)..<(offset + 16)]))
            XCTAssertEqual([target.outFeatures, target.inFeatures], [8, 8])
            // Stored [out, in]: the part is rows of the weight, as they are.
            let weight = try model.loadTensor(try XCTUnwrap(model.graph.initializers.first { $0.name == "qkv_weight" }))
            let rows = Array(offset..<(offset + 4)) + Array((offset + 12)..<(offset + 16))
            let expected = rows.flatMap { Array(weight.floats[($0 * 8)..<($0 * 8 + 8)]) }
            XCTAssertEqual(try Self.adaptedWeight(target, in: model).floats, expected)
        }
        XCTAssertEqual(targets[3].layout, .matMul)
        XCTAssertEqual(targets[3].bias, "out_bias")
    }

    /// `peftWeight` turns every storage into `[out, in]`: `[in, out]` is transposed, `[out, in]` kept, and a fused
    /// part keeps only its output features, in order.
    func testPEFTOrientationOfEveryLayout() {
        // W as [out = 3, in = 2]: w[o][i] = 10·o + i.
        let outByIn = Tensor(shape: [3, 2], floats: [0, 1, 10, 11, 20, 21])
        let inByOut = Tensor(shape: [2, 3], floats: [0, 10, 20, 1, 11, 21])
        func target(_ layout: LoRATarget.Layout, out: Int) -> LoRATarget {
            LoRATarget(modulePath: "m", kind: .q, node: "n", weight: "w", layer: 0, inFeatures: 2, outFeatures: out,
                       layout: layout)
        }
        XCTAssertEqual(target(.matMul, out: 3).peftWeight(from: inByOut)?.floats, outByIn.floats)
        XCTAssertEqual(target(.gemm(transB: false), out: 3).peftWeight(from: inByOut)?.floats, outByIn.floats)
        XCTAssertEqual(target(.gemm(transB: true), out: 3).peftWeight(from: outByIn)?.floats, outByIn.floats)
        XCTAssertEqual(target(.fused(storage: .matMul, columns: [0..<1, 2..<3]), out: 2).peftWeight(from: inByOut)?.floats,
                       [0, 1, 20, 21])
        XCTAssertEqual(target(.fused(storage: .gemm(transB: true), columns: [1..<3]), out: 2).peftWeight(from: outByIn)?.floats,
                       [10, 11, 20, 21])
        XCTAssertNil(target(.matMul, out: 3).peftWeight(from: outByIn), "a [3, 2] weight is not [in = 2, out = 3]")
    }

    func testTargetsRoundTripThroughJSON() throws {
        let fixture = try ExportFixture.named("gpt-neox-dynamo")
        let targets = try LoRATargets.find(in: try fixture.model(), kinds: Set(LoRATarget.Kind.allCases))
        let decoded = try JSONDecoder().decode([LoRATarget].self, from: JSONEncoder().encode(targets))
        XCTAssertEqual(decoded, targets)
    }

    // MARK: - No attention

    func testGraphsWithoutAttentionAreAnErrorNamingTheModel() throws {
        for (file, reason) in [("gemm_tA0_tB0.onnx", "the graph has no Softmax node"),
                               ("softmax_axism1.onnx", "none of its 1 Softmax node(s)")] {
            let path = fixturePath("ops/\(file)")
            let model = try Model.load(path: path)
            XCTAssertThrowsError(try LoRATargets.find(in: model)) { error in
                guard case AdapterError.loraTargetsNotFound(let named, let message)? = error as? AdapterError else {
                    return XCTFail("\(file): unexpected error \(error)")
                }
                XCTAssertEqual(named, path)
                XCTAssert(message.contains(reason), "\(file): \(message)")
                XCTAssert("\(error)".contains(path), "\(error)")
            }
            XCTAssertThrowsError(try LoRATargets.find(in: model, matching: ["all-linear"]), file)
        }
    }
}
