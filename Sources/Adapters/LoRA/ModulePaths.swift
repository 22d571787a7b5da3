import Foundation
import ONNXGraph

/// Hugging Face module paths recovered from what exporters leave in the graph; used only to label targets
/// found by structure (PEFT keys are `base_model.model.<module path>.lora_A.weight`).
///
/// Two sources: TorchScript (and optimum) name nodes after the module that ran them,
/// `/model/model/layers.0/self_attn/q_proj/MatMul`; the dynamo exporter keeps the module stack in node
/// metadata, `pkg.torch.onnx.name_scopes = "['', 'model', 'model.model', …, 'model.model.layers.0.self_attn.q_proj',
/// 'linear']"` (the last entry is the op, the one before it the module). Exports are often made through a
/// wrapper module (`forward(input_ids, attention_mask) -> logits` holding the model as `model`), which adds a
/// prefix the Hugging Face model does not have: the longest prefix common to every path in the graph is
/// removed, but never a container whose next component is a layer number (`layers` in `layers.0`).
struct ModulePaths {
    /// Dotted components removed from every path.
    let root: [Substring]

    init(graph: Graph) {
        let paths = graph.nodes.compactMap(Self.rawPath(of:)).map { $0.split(separator: ".") }
        guard var common = paths.first else {
            root = []
            return
        }
        for path in paths.dropFirst() {
            var length = 0
            while length < common.count, length < path.count, common[length] == path[length] { length += 1 }
            common.removeLast(common.count - length)
            if common.isEmpty { break }
        }
        // Keep `h` of `transformer.h.0` and `layers` of `layers.0`: a container of numbered blocks belongs to
        // the model, not to a wrapper.
        while let last = common.indices.last {
            let isContainer = paths.contains { path in
                path.count > last + 1 && path[last + 1].allSatisfy(\.isNumber)
            }
            guard isContainer else { break }
            common.removeLast()
        }
        root = common
    }

    /// The Hugging Face module path of `node`, nil when the graph does not name it.
    func modulePath(of node: Node) -> String? {
        guard let raw = Self.rawPath(of: node) else { return nil }
        let components = raw.split(separator: ".")
        guard components.count > root.count, Array(components.prefix(root.count)) == root else { return nil }
        return components.dropFirst(root.count).joined(separator: ".")
    }

    /// The Hugging Face module path of the `kind` part (q, k or v) of an attention op's packed qkv projection whose
    /// node is labelled `fused`. onnxruntime-genai's builder packs the separate `self_attn.q_proj`, `k_proj` and
    /// `v_proj` of the Hugging Face model into one MatMul named `/model/layers.N/attn/qkv_proj/MatMul`, so
    /// `model.layers.N.attn.qkv_proj` gives `model.layers.N.self_attn.q_proj` (a last component `qkv_proj` or `qkv`
    /// becomes `<kind>_proj`, a container `attn` becomes `self_attn`); another name gets `.<kind>_proj` appended, and
    /// an unnamed projection is `layers.N.attention.<kind>_proj`.
    static func packedPart(of fused: String?, kind: LoRATarget.Kind, layer: Int) -> String {
        let part = "\(kind.rawValue)_proj"
        guard let fused else { return "layers.\(layer).attention.\(part)" }
        var components = fused.split(separator: ".").map(String.init)
        guard let last = components.last, last == "qkv_proj" || last == "qkv" else { return "\(fused).\(part)" }
        components[components.count - 1] = part
        if components.count >= 2, components[components.count - 2] == "attn" { components[components.count - 2] = "self_attn" }
        return components.joined(separator: ".")
    }

    /// The module path of a packed qkv projection whose Hugging Face model has one fused module for it (Phi-3's
    /// `self_attn.qkv_proj`): the builder's `model.layers.N.attn.qkv_proj` with `attn` read as `self_attn`.
    static func fusedInSource(_ fused: String?, layer: Int) -> String {
        guard let fused else { return "layers.\(layer).attention.qkv_proj" }
        var components = fused.split(separator: ".").map(String.init)
        if components.count >= 2, components[components.count - 2] == "attn" { components[components.count - 2] = "self_attn" }
        return components.joined(separator: ".")
    }

    /// onnxruntime-genai model types (`genai_config.json`'s `model.type`) whose Hugging Face attention computes q, k
    /// and v in one module (transformers' `Phi3Attention.qkv_proj`), so that the builder's packed qkv is that one
    /// module and keeps one shared adapter, as PEFT has on the Hugging Face model.
    static let fusedQKVModelTypes: Set<String> = ["phi3"]

    /// The `model.type` of the `genai_config.json` beside `modelPath`, nil when there is none or it cannot be read.
    static func builderModelType(modelPath: String) -> String? {
        let folder = URL(fileURLWithPath: modelPath).deletingLastPathComponent()
        guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent("genai_config.json").path),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let model = root["model"] as? [String: Any] else { return nil }
        return model["type"] as? String
    }

    /// The module path as the exporter wrote it (wrapper prefix included), nil when there is none.
    static func rawPath(of node: Node) -> String? {
        if let scopes = node.metadata["pkg.torch.onnx.name_scopes"] {
            // Module entries, root ('') first, then the op's own name.
            guard let entries = parsePythonStringList(scopes), entries.count >= 2, entries[0].isEmpty else { return nil }
            let module = entries[entries.count - 2]
            return module.isEmpty ? nil : module
        }
        guard node.name.hasPrefix("/") else { return nil }
        var components = node.name.split(separator: "/")
        guard components.count >= 2 else { return nil }
        components.removeLast()  // the op: `MatMul`, `Gemm`, `Add_1`
        return components.joined(separator: ".")
    }

    /// `['', 'model', "a'b"]` -> ["", "model", "a'b"]; nil when the text is not a list of quoted strings.
    static func parsePythonStringList(_ text: String) -> [String]? {
        var characters = Substring(text).drop { $0 == " " }
        guard characters.first == "[" else { return nil }
        characters = characters.dropFirst()
        var result: [String] = []
        while true {
            characters = characters.drop { $0 == " " || $0 == "," }
            guard let first = characters.first else { return nil }
            if first == "]" { return result }
            guard first == "'" || first == "\"" else { return nil }
            characters = characters.dropFirst()
            var value = ""
            var closed = false
            while let character = characters.first {
                characters = characters.dropFirst()
                if character == "\\", let escaped = characters.first {
                    value.append(escaped)
                    characters = characters.dropFirst()
                } else if character == first {
                    closed = true
                    break
                } else {
                    value.append(character)
                }
            }
            guard closed else { return nil }
            result.append(value)
        }
    }
}
