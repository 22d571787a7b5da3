import Foundation

/// A Hugging Face `tokenizer.json` tokenizer that produces exactly the ids of the `tokenizers` library.
///
/// transformers (and so TRL) gives the same ids when tokenizer_config.json's `tokenizer_class` is
/// `PreTrainedTokenizerFast`/`TokenizersBackend`. With a model-specific class (`LlamaTokenizer`, `Qwen2Tokenizer`,
/// `GPT2Tokenizer`), transformers 5 rebuilds the normalizer and pre-tokenizer from that class's own definition and may
/// disagree with tokenizer.json (measured: a legacy Llama-2 file, Prepend + Replace normalizers, loaded as
/// `LlamaTokenizer` is run with Metaspace(prepend_scheme: first) instead); `tokenizerClass` lets callers notice.
///
/// Encoding follows tokenizers' pipeline:
/// 1. added tokens with `normalized: false` (special tokens, usually) are cut out of the raw text;
/// 2. each remaining stretch is normalized, then added tokens with `normalized: true` are cut out of it;
/// 3. the pre-tokenizer splits the rest into words, and the BPE model turns each word into ids;
/// 4. with `addSpecialTokens`, the post-processor adds BOS/EOS (or CLS/SEP) around the sequence.
/// Special tokens written in the text (`"hello<|endoftext|>"`) are always matched as their single id, whatever
/// `addSpecialTokens` says (transformers' default, `split_special_tokens=False`).
///
/// Supported: the BPE model (with `byte_fallback`, `ignore_merges`, `unk_token`/`fuse_unk`,
/// `continuing_subword_prefix`, `end_of_word_suffix`), the normalizers, pre-tokenizers, post-processors and decoders
/// that GPT-2, Llama 2/3, Mistral, Qwen2, RoBERTa-style files use (see `makeNormalizer`, `makePreTokenizer`,
/// `makePostProcessor`, `makeDecoder`). Any other component type fails at load with
/// `TokenizerError.unsupportedTokenizerComponent`. `truncation` and `padding` in the file are ignored: callers
/// truncate and pad.
public struct Tokenizer: Sendable {
    /// The tokenizer.json that was read.
    public let path: String

    let normalizer: (any Normalizer)?
    let preTokenizer: (any PreTokenizer)?
    let model: BPEModel
    let postProcessor: (any PostProcessor)?
    let decoder: (any Decoder)?
    let addedTokensByID: [Int: AddedToken]
    let addedTokenIDsByContent: [[UInt8]: Int]
    let specialTokenContents: Set<[UInt8]>
    /// Added tokens matched on the raw text, and those matched on normalized text.
    let rawTokenMatcher: AddedTokenMatcher
    let normalizedTokenMatcher: AddedTokenMatcher

    /// How many distinct tokens there are, the model's vocabulary and the added tokens together (tokenizers'
    /// `get_vocab_size(with_added_tokens=True)`, transformers' `len(tokenizer)`).
    public let vocabularySize: Int
    /// Beginning-of-sequence token: `bos_token` of tokenizer_config.json when that file exists beside
    /// tokenizer.json, else the first special token the post-processor puts in front of a sequence.
    public let bosToken: String?
    /// The id of `bosToken` (nil when there is none, or it names no token).
    public let bosTokenID: Int?
    /// End-of-sequence token: `eos_token` of tokenizer_config.json when that file exists, else the last special token
    /// the post-processor puts after a sequence.
    public let eosToken: String?
    /// The id of `eosToken`: the id TRL appends (as text) after every completion.
    public let eosTokenID: Int?
    /// Padding token: `pad_token` of tokenizer_config.json, when the file exists and names one.
    public let padToken: String?
    /// The id of `padToken`.
    public let padTokenID: Int?
    /// `tokenizer_class` of tokenizer_config.json, when the file exists and names one.
    public let tokenizerClass: String?

    /// Reads `path` (a tokenizer.json file, or a folder holding one) and, when present, the tokenizer_config.json
    /// beside it. Fails with `TokenizerError.invalidTokenizer` for a missing or malformed file and with
    /// `TokenizerError.unsupportedTokenizerComponent` for a component type this tokenizer does not implement.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        var filePath = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            filePath = (path as NSString).appendingPathComponent("tokenizer.json")
        }
        let json = try Self.readJSON(filePath)
        let reader = TokenizerConfigReader(path: filePath)
        guard case .object = json else {
            throw TokenizerError.invalidTokenizer(path: filePath, reason: "expected a JSON object at the top level")
        }
        self.path = filePath

        func component<T>(_ key: String, _ make: (JSONValue, String, TokenizerConfigReader) throws(TokenizerError) -> T)
            throws(TokenizerError) -> T?
        {
            guard let value = json[key], !value.isNull else { return nil }
            return try make(value, key, reader)
        }
        normalizer = try component("normalizer") { (value, location, reader) throws(TokenizerError) in
            try makeNormalizer(value, at: location, reader: reader)
        }
        preTokenizer = try component("pre_tokenizer") { (value, location, reader) throws(TokenizerError) in
            try makePreTokenizer(value, at: location, reader: reader)
        }
        postProcessor = try component("post_processor") { (value, location, reader) throws(TokenizerError) in
            try makePostProcessor(value, at: location, reader: reader)
        }
        decoder = try component("decoder") { (value, location, reader) throws(TokenizerError) in
            try makeDecoder(value, at: location, reader: reader)
        }

        guard let modelJSON = json["model"], case .object = modelJSON else {
            throw reader.invalid("model", "missing or not an object")
        }
        // Files from before `type` was written only hold a BPE model when they have merges.
        let modelType = try reader.optionalString(modelJSON, "type", at: "model")
            ?? (modelJSON["merges"] != nil ? "BPE" : "unknown (no 'type' field)")
        guard modelType == "BPE" else { throw reader.unsupported("model", type: modelType) }
        let model = try BPEModel(json: modelJSON, at: "model", reader: reader)
        self.model = model

        // Added tokens.
        var addedTokens: [AddedToken] = []
        if let list = json["added_tokens"], !list.isNull {
            guard case .array(let elements) = list else { throw reader.invalid("added_tokens", "expected an array") }
            for (index, element) in elements.enumerated() {
                let location = "added_tokens[\(index)]"
                let special = try reader.bool(element, "special", default: false, at: location)
                addedTokens.append(AddedToken(
                    id: try reader.tokenID(element, "id", at: location),
                    content: try reader.string(element, "content", at: location),
                    special: special,
                    normalized: try reader.bool(element, "normalized", default: !special, at: location),
                    lstrip: try reader.bool(element, "lstrip", default: false, at: location),
                    rstrip: try reader.bool(element, "rstrip", default: false, at: location),
                    singleWord: try reader.bool(element, "single_word", default: false, at: location)))
            }
        }
        var byID: [Int: AddedToken] = [:]
        var byContent: [[UInt8]: Int] = [:]
        var specials: Set<[UInt8]> = []
        for token in addedTokens {
            byID[token.id] = token
            byContent[Array(token.content.utf8)] = token.id
            if token.special { specials.insert(Array(token.content.utf8)) }
        }
        addedTokensByID = byID
        addedTokenIDsByContent = byContent
        specialTokenContents = specials
        let normalizer = self.normalizer
        rawTokenMatcher = AddedTokenMatcher(addedTokens.filter { !$0.normalized }.map { ($0.content, $0) })
        normalizedTokenMatcher = AddedTokenMatcher(addedTokens.filter(\.normalized).map {
            (normalizer?.normalize($0.content) ?? $0.content, $0)
        })
        vocabularySize = model.vocabulary.count + byContent.keys.filter { model.vocabulary[$0] == nil }.count

        // Special tokens: tokenizer_config.json is what transformers reads; the post-processor is the fallback.
        let configPath = ((filePath as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("tokenizer_config.json")
        var bos: String?
        var eos: String?
        var pad: String?
        var tokenizerClass: String?
        if FileManager.default.fileExists(atPath: configPath) {
            let config = try Self.readJSON(configPath)
            let configReader = TokenizerConfigReader(path: configPath)
            bos = try Self.specialToken(config, "bos_token", reader: configReader)
            eos = try Self.specialToken(config, "eos_token", reader: configReader)
            pad = try Self.specialToken(config, "pad_token", reader: configReader)
            tokenizerClass = try configReader.optionalString(config, "tokenizer_class", at: "tokenizer_config")
        } else if let postProcessor {
            bos = postProcessor.leadingSpecialTokens.first?.token
            eos = postProcessor.trailingSpecialTokens.last?.token
        }
        func lookUp(_ token: String?) -> Int? {
            token.flatMap { byContent[Array($0.utf8)] ?? model.vocabulary[Array($0.utf8)] }
        }
        bosToken = bos
        bosTokenID = lookUp(bos)
        eosToken = eos
        eosTokenID = lookUp(eos)
        padToken = pad
        padTokenID = lookUp(pad)
        self.tokenizerClass = tokenizerClass
    }

    /// The ids of `text`; with `addSpecialTokens`, wrapped by the post-processor (BOS for Llama-style files).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3)
        for segment in rawTokenMatcher.split(text, isAtStart: true) {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let raw, let isAtStart):
                let piece = TextPiece(text: raw, isAtStart: isAtStart)
                let normalized = normalizer?.normalize(piece) ?? piece
                for inner in normalizedTokenMatcher.split(normalized.text, isAtStart: normalized.isAtStart) {
                    switch inner {
                    case .token(let id):
                        ids.append(id)
                    case .text(let piece, let isAtStart):
                        let start = TextPiece(text: piece, isAtStart: isAtStart)
                        let words = preTokenizer?.preTokenize([start]) ?? [start]
                        for word in words { ids += model.tokenize(word.text) }
                    }
                }
            }
        }
        if addSpecialTokens, let postProcessor { ids = postProcessor.process(ids) }
        return ids
    }

    /// The text of `ids` through the decoder (ids that name no token are skipped, as tokenizers does); with
    /// `skipSpecialTokens`, special added tokens are left out.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let token = token(forID: id) else { continue }
            if skipSpecialTokens && specialTokenContents.contains(Array(token.utf8)) { continue }
            tokens.append(token)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    /// The id of a token string (added tokens first, then the model's vocabulary), compared byte for byte.
    public func id(forToken token: String) -> Int? {
        let bytes = Array(token.utf8)
        return addedTokenIDsByContent[bytes] ?? model.vocabulary[bytes]
    }

    /// The token string of an id (added tokens first, then the model's vocabulary).
    public func token(forID id: Int) -> String? {
        addedTokensByID[id]?.content ?? model.tokensByID[id]
    }

    private static func readJSON(_ path: String) throws(TokenizerError) -> JSONValue {
        guard FileManager.default.fileExists(atPath: path) else {
            throw .invalidTokenizer(path: path, reason: "no such file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalidTokenizer(path: path, reason: "the file cannot be read")
        }
        do {
            return try parseJSON([UInt8](data))
        } catch {
            throw .invalidTokenizer(
                path: path, reason: "not valid JSON: \(error.message) at line \(error.line), column \(error.column)")
        }
    }

    /// A special-token entry of tokenizer_config.json: a string, `{"content": ...}` (an AddedToken), or null.
    private static func specialToken(_ config: JSONValue, _ key: String, reader: TokenizerConfigReader)
        throws(TokenizerError) -> String?
    {
        guard let value = config[key] else { return nil }
        switch value {
        case .null: return nil
        case .string(let token): return token
        case .object: return try reader.string(value, "content", at: key)
        default: throw reader.invalid(key, "expected a string or an object with 'content', found \(value.kindName)")
        }
    }
}
