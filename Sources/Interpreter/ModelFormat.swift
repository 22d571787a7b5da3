import Foundation
import ONNXGraph

/// What kind of LLM file a model is, as `inspect` names it: who wrote it (from the graph's structure and the files
/// beside it, as a hint only), how its weights are quantised, its KV-cache inputs, and the attention op of each layer.
public struct ModelFormat: Encodable, Sendable {
    /// `onnxruntime-genai model builder` (a `genai_config.json` beside the model, or GroupQueryAttention with
    /// packed inputs and cos/sin caches), `exported (attention decomposed into MatMul and Softmax)`, or `unknown`.
    public var producer: String
    /// `none`, or e.g. `MatMulNBits 4-bit, block 32 (14 nodes); GatherBlockQuantized 4-bit (1 node)`, or for
    /// onnxruntime's dynamic quantizer (onnx-community `model_int8`) `DynamicQuantizeLinear + MatMulInteger, int8
    /// weights, per tensor (15 nodes); Gather + DequantizeLinear, uint8 (1 node)`.
    public var quantization: String
    /// The past inputs fed empty for whole-sequence runs, with their `[heads, head size]`.
    public var kvCacheInputs: [String]
    /// Per attention layer, in graph order: the op computing it (`com.microsoft.GroupQueryAttention`, or
    /// `Softmax (decomposed)`).
    public var attentionPerLayer: [String]

    public init(model: Model) {
        let nodes = model.graph.nodes
        let folder = (model.path as NSString).deletingLastPathComponent
        let hasGenAIConfig = FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent("genai_config.json"))
        let attentionOps = ["GroupQueryAttention", "MultiHeadAttention", "Attention"]
        attentionPerLayer = nodes.compactMap { node in
            if attentionOps.contains(node.opType) { return "\(node.domain.isEmpty ? "" : node.domain + ".")\(node.opType)" }
            return node.opType == "Softmax" && node.domain.isEmpty ? "Softmax (decomposed)" : nil
        }
        let packedRotary = nodes.contains {
            $0.opType == "GroupQueryAttention" && (try? $0.int("do_rotary", default: 0)) == 1
        }
        if hasGenAIConfig || packedRotary {
            producer = "onnxruntime-genai model builder" + (hasGenAIConfig ? " (genai_config.json beside it)" : "")
        } else if attentionPerLayer.contains("Softmax (decomposed)") {
            producer = "exported (attention decomposed into MatMul and Softmax)"
        } else {
            producer = "unknown"
        }
        var groups: [String: Int] = [:]
        for node in nodes where node.opType == "MatMulNBits" || node.opType == "GatherBlockQuantized" {
            let bits = (try? node.int("bits", default: 4)) ?? 4
            let block = (try? node.int("block_size", default: node.opType == "MatMulNBits" ? 0 : 128)) ?? 0
            groups["\(node.opType) \(bits)-bit, block \(block)", default: 0] += 1
        }
        let initializers = Dictionary(model.graph.initializers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for projection in DynamicQuantizedMatMul.find(in: nodes) {
            let output = nodes[projection.outputNode]
            let form = output.opType == "Mul" ? "DynamicQuantizeLinear + MatMulInteger"
                : projection.nodes.count > 1 ? "DynamicQuantizeLinear + \(output.opType)" : output.opType
            let weights = initializers[projection.weight].map { "\($0.dataType)" } ?? "computed"
            let scales = initializers[projection.weightScale].map { $0.shape.reduce(1, *) == 1 ? "per tensor" : "per channel" }
            groups["\(form), \(weights) weights, \(scales ?? "computed scale")", default: 0] += 1
        }
        let producers = Dictionary(nodes.flatMap { node in node.outputs.map { ($0, node) } }, uniquingKeysWith: { first, _ in first })
        for node in nodes where node.opType == "DequantizeLinear" {
            guard let gather = node.inputs.first.flatMap({ producers[$0] }), gather.opType == "Gather",
                  let table = gather.inputs.first.flatMap({ initializers[$0] }) else { continue }
            groups["Gather + DequantizeLinear, \(table.dataType)", default: 0] += 1
        }
        quantization = groups.isEmpty ? "none"
            : groups.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) node\($0.value == 1 ? "" : "s"))" }.joined(separator: "; ")
        kvCacheInputs = ((try? KVCacheInputs(model: model))?.inputs ?? []).map { "\($0.name) [\($0.heads), \($0.headSize)]" }
    }

    /// Lines for `inspect`'s text.
    public var text: String {
        var lines = ["format:", "  producer: \(producer)", "  quantization: \(quantization)"]
        lines.append("  KV-cache inputs: " + (kvCacheInputs.isEmpty ? "none"
            : "\(kvCacheInputs.count) (fed empty for training and whole-sequence runs): " + kvCacheInputs.joined(separator: ", ")))
        var runs: [(String, Int)] = []
        for op in attentionPerLayer {
            if let last = runs.last, last.0 == op { runs[runs.count - 1].1 += 1 } else { runs.append((op, 1)) }
        }
        lines.append("  attention per layer: " + (runs.isEmpty ? "none found"
            : runs.map { "\($0.0) ×\($0.1)" }.joined(separator: ", ")))
        return lines.joined(separator: "\n")
    }
}
