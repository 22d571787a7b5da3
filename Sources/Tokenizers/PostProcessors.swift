/// A `post_processor` of tokenizer.json: adds the special tokens around an encoded sequence when
/// `addSpecialTokens` is true (BOS for Llama, `<s> … </s>` for RoBERTa, `[CLS] … [SEP]` for BERT). Ids only:
/// offsets and type ids are not computed.
protocol PostProcessor: Sendable {
    func process(_ ids: [Int]) -> [Int]
    /// The special tokens put before and after a single sequence, as (token, id): the fallback for BOS/EOS when
    /// there is no tokenizer_config.json.
    var leadingSpecialTokens: [(token: String, id: Int)] { get }
    var trailingSpecialTokens: [(token: String, id: Int)] { get }
}

/// Builds the post-processor a tokenizer.json object describes; unknown types fail here, at load.
func makePostProcessor(_ json: JSONValue, at location: String, reader: TokenizerConfigReader)
    throws(TokenizerError) -> any PostProcessor
{
    let type = try reader.type(of: json, at: location)
    switch type {
    case "ByteLevel":
        // Only trims offsets; the ids are unchanged.
        return SurroundingPostProcessor(leading: [], trailing: [])
    case "TemplateProcessing":
        return try TemplatePostProcessor(json: json, at: location, reader: reader)
    case "RobertaProcessing", "BertProcessing":
        // cls $A sep (the pair forms differ, but only single sequences are encoded here).
        let cls = try tokenAndID(json, "cls", at: location, reader: reader)
        let sep = try tokenAndID(json, "sep", at: location, reader: reader)
        return SurroundingPostProcessor(leading: [cls], trailing: [sep])
    case "Sequence":
        var processors: [any PostProcessor] = []
        for (index, element) in try reader.array(json, "processors", at: location).enumerated() {
            processors.append(try makePostProcessor(element, at: "\(location).processors[\(index)]", reader: reader))
        }
        return SequencePostProcessor(processors: processors)
    default:
        throw reader.unsupported(location, type: type)
    }
}

private func tokenAndID(_ json: JSONValue, _ key: String, at location: String, reader: TokenizerConfigReader)
    throws(TokenizerError) -> (token: String, id: Int)
{
    let pair = try reader.array(json, key, at: location)
    guard pair.count == 2, case .string(let token) = pair[0] else {
        throw reader.invalid("\(location).\(key)", "expected [token, id]")
    }
    return (token, try reader.tokenID(pair[1], at: "\(location).\(key)[1]"))
}

/// Fixed tokens before and after the sequence (RobertaProcessing, BertProcessing; ByteLevel with none).
struct SurroundingPostProcessor: PostProcessor {
    let leading: [(token: String, id: Int)]
    let trailing: [(token: String, id: Int)]

    var leadingSpecialTokens: [(token: String, id: Int)] { leading }
    var trailingSpecialTokens: [(token: String, id: Int)] { trailing }

    func process(_ ids: [Int]) -> [Int] { leading.map(\.id) + ids + trailing.map(\.id) }
}

/// TemplateProcessing's `single` template, e.g. `[{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]`,
/// where each special token name expands to the ids listed under `special_tokens`.
struct TemplatePostProcessor: PostProcessor {
    enum Piece: Sendable {
        case sequence
        case special(name: String, tokens: [String], ids: [Int])
    }

    let single: [Piece]

    init(json: JSONValue, at location: String, reader: TokenizerConfigReader) throws(TokenizerError) {
        var specials: [String: (tokens: [String], ids: [Int])] = [:]
        if case .object(let entries)? = json["special_tokens"] {
            for (name, value) in entries {
                let entryLocation = "\(location).special_tokens[\(name.debugDescription)]"
                var ids: [Int] = []
                for (index, id) in try reader.array(value, "ids", at: entryLocation).enumerated() {
                    ids.append(try reader.tokenID(id, at: "\(entryLocation).ids[\(index)]"))
                }
                var tokens: [String] = []
                for token in (try? reader.array(value, "tokens", at: entryLocation)) ?? [] {
                    if case .string(let text) = token { tokens.append(text) }
                }
                specials[name] = (tokens, ids)
            }
        }
        var pieces: [Piece] = []
        for (index, element) in try reader.array(json, "single", at: location).enumerated() {
            let pieceLocation = "\(location).single[\(index)]"
            if let special = element["SpecialToken"] {
                let name = try reader.string(special, "id", at: "\(pieceLocation).SpecialToken")
                guard let entry = specials[name] else {
                    throw reader.invalid(pieceLocation, "special token '\(name)' is not listed in special_tokens")
                }
                pieces.append(.special(name: name, tokens: entry.tokens, ids: entry.ids))
            } else if let sequence = element["Sequence"] {
                let name = try reader.string(sequence, "id", at: "\(pieceLocation).Sequence")
                guard name == "A" else {
                    throw reader.invalid(pieceLocation, "the single template can only hold sequence A, found '\(name)'")
                }
                pieces.append(.sequence)
            } else {
                throw reader.invalid(pieceLocation, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}")
            }
        }
        single = pieces
    }

    func process(_ ids: [Int]) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(ids.count + single.count)
        for piece in single {
            switch piece {
            case .sequence: output += ids
            case .special(_, _, let specialIDs): output += specialIDs
            }
        }
        return output
    }

    private func specials(_ pieces: some Sequence<Piece>) -> [(token: String, id: Int)] {
        var result: [(token: String, id: Int)] = []
        for piece in pieces {
            if case .special(let name, let tokens, let ids) = piece {
                for (index, id) in ids.enumerated() {
                    result.append((index < tokens.count ? tokens[index] : name, id))
                }
            }
        }
        return result
    }

    var leadingSpecialTokens: [(token: String, id: Int)] {
        specials(single.prefix { if case .sequence = $0 { false } else { true } })
    }

    var trailingSpecialTokens: [(token: String, id: Int)] {
        guard let last = single.lastIndex(where: { if case .sequence = $0 { true } else { false } }) else { return [] }
        return specials(single[(last + 1)...])
    }
}

/// Post-processors applied in order.
struct SequencePostProcessor: PostProcessor {
    let processors: [any PostProcessor]

    func process(_ ids: [Int]) -> [Int] { processors.reduce(ids) { $1.process($0) } }

    var leadingSpecialTokens: [(token: String, id: Int)] {
        processors.reversed().flatMap(\.leadingSpecialTokens)
    }

    var trailingSpecialTokens: [(token: String, id: Int)] { processors.flatMap(\.trailingSpecialTokens) }
}
