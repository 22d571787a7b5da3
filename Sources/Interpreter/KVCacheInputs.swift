import Foundation
import ONNXGraph

/// The key/value-cache inputs of a decoder graph with past (onnxruntime-genai's builder: `past_key_values.N.key` /
/// `.value`, `[batch, kv_heads, past, head_size]`; optimum's with-past exports name them the same way). Training and
/// whole-sequence runs feed them empty (`past` = 0), so the graph computes every position from scratch; its
/// `present` outputs are then the new keys and values, which nobody needs to read.
///
/// An input is a cache input when its name starts with `past` and it is a rank-4 float tensor. Its sizes come from
/// its declared shape where fixed; a symbolic head size (the builder declares `kv_cache_dim`) is read from the
/// attention node that consumes it (GroupQueryAttention: its packed or separate q/k/v projection's width over the
/// head counts) or else from `genai_config.json` beside the model (`model.decoder.head_size`).
public struct KVCacheInputs: Sendable {
    /// Per cache input: its name, key/value heads and head size.
    public let inputs: [(name: String, heads: Int, headSize: Int)]

    /// The cache inputs of `model`; throws `InterpreterError.invalidInput` for one whose sizes cannot be told.
    public init(model: Model) throws {
        let graph = model.graph
        var found: [(String, Int, Int)] = []
        for input in graph.runtimeInputs where input.name.hasPrefix("past") {
            guard let shape = input.shape, shape.count == 4, input.elementType.isFloatingPoint else { continue }
            guard case .fixed(let heads) = shape[1] else {
                throw InterpreterError.invalidInput(name: input.name, reason:
                    "looks like a KV-cache input but declares no fixed number of heads (dimension 1 of \(input.typeDescription))")
            }
            var headSize: Int?
            if case .fixed(let size) = shape[3] { headSize = size }
            headSize = headSize ?? Self.attentionHeadSize(reading: input.name, in: model) ?? Self.configuredHeadSize(model)
            guard let headSize else {
                throw InterpreterError.invalidInput(name: input.name, reason:
                    "is a KV-cache input whose head size (\(shape[3])) neither the graph nor genai_config.json gives")
            }
            found.append((input.name, heads, headSize))
        }
        inputs = found
    }

    /// Throws when `model` attends through GroupQueryAttention and a row of `mask` is not right-padded (ones, then
    /// zeros): the op only sees each row's length (`seqlens_k`, the builder's `ReduceSum(mask) - 1`), so it cannot
    /// express left padding or holes; onnxruntime would silently compute something else.
    public static func checkRightPadded(_ mask: Tensor, model: Model) throws {
        guard mask.rank == 2, let values = mask.int64Values,
              model.graph.nodes.contains(where: { $0.opType == "GroupQueryAttention" }) else { return }
        let width = mask.shape[1]
        for row in 0..<mask.shape[0] {
            let cells = values[(row * width)..<((row + 1) * width)]
            let length = cells.prefix { $0 != 0 }.count
            guard cells.dropFirst(length).allSatisfy({ $0 == 0 }) else {
                throw InterpreterError.invalidInput(name: "attention_mask", reason:
                    "row \(row) is not right-padded (ones, then zeros); GroupQueryAttention reads the mask only as each "
                    + "row's length, so right-pad the batch or run one sequence at a time")
            }
        }
    }

    /// Empty caches for `batch` sequences: `[batch, heads, 0, headSize]` per cache input.
    public func emptyFeeds(batch: Int) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: inputs.map {
            ($0.name, Tensor(shape: [batch, $0.heads, 0, $0.headSize], floats: []))
        })
    }

    /// The head size of the GroupQueryAttention node reading `name` as its past key or value, from the static width of
    /// its query input: the output columns of the MatMul (initializer `[K, N]`) or MatMulNBits (attribute N) that
    /// computes it, possibly through a bias Add; `N / (num_heads + 2·kv_num_heads)` when q, k and v are packed.
    static func attentionHeadSize(reading name: String, in model: Model) -> Int? {
        let graph = model.graph
        guard let attention = graph.nodes.first(where: {
            $0.opType == "GroupQueryAttention" && $0.inputs.count > 4 && ($0.inputs[3] == name || $0.inputs[4] == name)
        }), let heads = try? attention.int("num_heads", default: 0), let kvHeads = try? attention.int("kv_num_heads", default: 0),
              heads > 0 else { return nil }
        let packed = attention.inputs.count < 3 || (attention.inputs[1].isEmpty && attention.inputs[2].isEmpty)
        let producers = Dictionary(graph.nodes.flatMap { node in node.outputs.map { ($0, node) } }, uniquingKeysWith: { a, _ in a })
        let shapes = Dictionary(graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var value = attention.inputs[0]
        for _ in 0..<3 {
            guard let producer = producers[value] else { return nil }
            var width: Int?
            switch producer.opType {
            case "MatMul": width = producer.inputs.count > 1 ? shapes[producer.inputs[1]]?.last : nil
            case "MatMulNBits": width = try? producer.int("N")
            case "Add":
                value = producer.inputs[0]
                continue
            default: return nil
            }
            guard let width else { return nil }
            let columns = packed ? heads + 2 * kvHeads : heads
            return width % columns == 0 ? width / columns : nil
        }
        return nil
    }

    /// `model.decoder.head_size` of the `genai_config.json` beside the model, if there is one.
    static func configuredHeadSize(_ model: Model) -> Int? {
        let path = ((model.path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("genai_config.json")
        guard let data = FileManager.default.contents(atPath: path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let decoder = (json["model"] as? [String: Any])?["decoder"] as? [String: Any] else { return nil }
        return decoder["head_size"] as? Int
    }
}
