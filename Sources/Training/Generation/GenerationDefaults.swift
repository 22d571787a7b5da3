import Foundation
import ONNXGraph
import Tokenizers

/// What the files beside a model say about generating with it: the tokens that end a sequence and the context
/// length. Read once, at load; each value says where it came from.
public struct GenerationDefaults: Sendable {
    /// EOS ids: `generation_config.json`'s `eos_token_id` (an id or a list, as transformers reads it), else
    /// `config.json`'s, else `genai_config.json`'s `model.eos_token_id`, else `tokenizer_config.json`'s
    /// `eos_token` looked up in `tokenizer.json`. Empty when none says.
    public var eosTokenIDs: Set<Int>
    /// The most positions the model takes: `config.json`'s `max_position_embeddings` (`n_positions`,
    /// `max_sequence_length`), else `genai_config.json`'s `model.context_length`, else the rows of a
    /// GroupQueryAttention node's `cos_cache`. Nil when none says.
    public var contextLength: Int?
    /// Where `contextLength` came from (for errors).
    public var contextSource: String

    public init(model: Model) {
        let folder = (model.path as NSString).deletingLastPathComponent
        func json(_ name: String) -> [String: Any]? {
            guard let data = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent(name)) else { return nil }
            return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        }
        func ids(_ value: Any?) -> Set<Int>? {
            if let id = value as? Int { return [id] }
            if let list = value as? [Int], !list.isEmpty { return Set(list) }
            return nil
        }
        let generation = json("generation_config.json"), config = json("config.json")
        let genai = json("genai_config.json")?["model"] as? [String: Any]
        var eos = ids(generation?["eos_token_id"]) ?? ids(config?["eos_token_id"]) ?? ids(genai?["eos_token_id"])
        if eos == nil, let tokenizer = try? Tokenizer(path: (folder as NSString).appendingPathComponent("tokenizer.json")),
           let id = tokenizer.eosTokenID {
            eos = [id]
        }
        eosTokenIDs = eos ?? []

        contextLength = nil
        contextSource = "unknown"
        for key in ["max_position_embeddings", "n_positions", "max_sequence_length"] {
            if let value = config?[key] as? Int {
                contextLength = value
                contextSource = "config.json \(key)"
                return
            }
        }
        if let value = genai?["context_length"] as? Int {
            contextLength = value
            contextSource = "genai_config.json context_length"
            return
        }
        let shapes = Dictionary(model.graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        if let attention = model.graph.nodes.first(where: { $0.opType == "GroupQueryAttention" && $0.inputs.count > 7 }),
           let rows = shapes[attention.inputs[7]]?.first {
            contextLength = rows
            contextSource = "the rows of \(attention.inputs[7]), GroupQueryAttention's cos_cache"
        }
    }
}
