/// A `pre_tokenizer` of tokenizer.json: cuts normalized text into the words the model tokenizes one by one (and may
/// rewrite them, as ByteLevel and Metaspace do).
protocol PreTokenizer: Sendable {
    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece]
}

/// Builds the pre-tokenizer a tokenizer.json object describes; unknown types fail here, at load.
func makePreTokenizer(_ json: JSONValue, at location: String, reader: TokenizerConfigReader)
    throws(TokenizerError) -> any PreTokenizer
{
    let type = try reader.type(of: json, at: location)
    switch type {
    case "ByteLevel":
        return ByteLevelPreTokenizer(addPrefixSpace: try reader.bool(json, "add_prefix_space", default: true, at: location),
                                     useRegex: try reader.bool(json, "use_regex", default: true, at: location))
    case "Split":
        return SplitPreTokenizer(pattern: try reader.pattern(json, "pattern", at: location),
                                 behavior: try behavior(json, "behavior", default: nil, at: location, reader: reader),
                                 invert: try reader.bool(json, "invert", default: false, at: location))
    case "Metaspace":
        let replacement = try reader.character(json, "replacement", at: location)
        let scheme: MetaspacePrependScheme
        if let name = try reader.optionalString(json, "prepend_scheme", at: location) {
            guard let parsed = MetaspacePrependScheme(rawValue: name) else {
                throw reader.invalid("\(location).prepend_scheme", "expected first, always or never, found '\(name)'")
            }
            scheme = parsed
        } else {
            // Files written before `prepend_scheme` existed say `add_prefix_space`.
            scheme = try reader.bool(json, "add_prefix_space", default: true, at: location) ? .always : .never
        }
        return MetaspacePreTokenizer(replacement: replacement, prependScheme: scheme,
                                     splitsOnReplacement: try reader.bool(json, "split", default: true, at: location))
    case "Sequence":
        var preTokenizers: [any PreTokenizer] = []
        for (index, element) in try reader.array(json, "pretokenizers", at: location).enumerated() {
            preTokenizers.append(try makePreTokenizer(element, at: "\(location).pretokenizers[\(index)]", reader: reader))
        }
        return SequencePreTokenizer(preTokenizers: preTokenizers)
    case "Digits":
        let individual = try reader.bool(json, "individual_digits", default: false, at: location)
        return CharacterSplitPreTokenizer(test: isNumeric, behavior: individual ? .isolated : .contiguous)
    case "Punctuation":
        return CharacterSplitPreTokenizer(
            test: isPunctuation,
            behavior: try behavior(json, "behavior", default: .isolated, at: location, reader: reader))
    case "WhitespaceSplit":
        return CharacterSplitPreTokenizer(test: { $0.properties.isWhitespace }, behavior: .removed)
    case "CharDelimiterSplit":
        let delimiter = try reader.character(json, "delimiter", at: location)
        return CharacterSplitPreTokenizer(test: { $0 == delimiter }, behavior: .removed)
    case "Whitespace":
        return WhitespacePreTokenizer()
    case "BertPreTokenizer":
        return SequencePreTokenizer(preTokenizers: [
            CharacterSplitPreTokenizer(test: { $0.properties.isWhitespace }, behavior: .removed),
            CharacterSplitPreTokenizer(test: isPunctuation, behavior: .isolated),
        ])
    default:
        // UnicodeScripts, FixedLength.
        throw reader.unsupported(location, type: type)
    }
}

private func behavior(
    _ json: JSONValue, _ key: String, default defaultValue: SplitDelimiterBehavior?, at location: String,
    reader: TokenizerConfigReader
) throws(TokenizerError) -> SplitDelimiterBehavior {
    guard let name = try reader.optionalString(json, key, at: location) else {
        if let defaultValue { return defaultValue }
        throw reader.invalid(location, "missing field '\(key)'")
    }
    guard let behavior = SplitDelimiterBehavior(rawValue: name) else {
        throw reader.invalid("\(location).\(key)", "unknown split behavior '\(name)'")
    }
    return behavior
}

/// Rust's `char::is_numeric`: general categories Nd, Nl, No.
@Sendable func isNumeric(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: true
    default: false
    }
}

/// tokenizers' `is_punc`: ASCII punctuation (which includes symbols such as `$+<=>^`|~`) or a Unicode P* category.
@Sendable func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
    if scalar.isASCII {
        let value = scalar.value
        return (0x21...0x2F).contains(value) || (0x3A...0x40).contains(value) || (0x5B...0x60).contains(value)
            || (0x7B...0x7E).contains(value)
    }
    switch scalar.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
        .finalPunctuation, .otherPunctuation:
        return true
    default:
        return false
    }
}

/// GPT-2's pre-tokenizer: optionally a space in front, optionally the GPT-2 regex split, then every byte mapped to
/// a printable character.
struct ByteLevelPreTokenizer: PreTokenizer {
    let addPrefixSpace: Bool
    let useRegex: Bool

    /// The regex of openai/gpt-2 `encoder.py`.
    static let gpt2Pattern = KnownSplitPattern.gpt2Pattern
    static let gpt2Regex: CompiledRegex = {
        do throws(CompiledRegex.CompileError) {
            return try CompiledRegex(gpt2Pattern)
        } catch {
            preconditionFailure(error.reason)
        }
    }()

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        var output: [TextPiece] = []
        output.reserveCapacity(pieces.count)
        for var piece in pieces where !piece.text.isEmpty {
            // Every piece (not only the first): tokenizers applies add_prefix_space per split.
            if addPrefixSpace && piece.text.utf8.first != UInt8(ascii: " ") { piece.text = " " + piece.text }
            let parts = useRegex ? split(piece, by: .regex(Self.gpt2Regex), behavior: .isolated) : [piece]
            for part in parts {
                output.append(TextPiece(text: ByteLevelTable.map(part.text), isAtStart: part.isAtStart))
            }
        }
        return output
    }
}

/// A regex or literal split with a delimiter behavior (Llama-3 and Qwen2 put their regex here).
struct SplitPreTokenizer: PreTokenizer {
    let pattern: TextPattern
    let behavior: SplitDelimiterBehavior
    let invert: Bool

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        pieces.flatMap { split($0, by: pattern, behavior: behavior, invert: invert) }
    }
}

/// A split on single characters that pass `test` (Digits, Punctuation, WhitespaceSplit, CharDelimiterSplit).
struct CharacterSplitPreTokenizer: PreTokenizer {
    let test: @Sendable (Unicode.Scalar) -> Bool
    let behavior: SplitDelimiterBehavior

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        pieces.flatMap { split($0, by: .characters(test), behavior: behavior) }
    }
}

/// Runs of word characters, and runs of characters that are neither word characters nor whitespace (`\w+|[^\w\s]+`);
/// whitespace is dropped.
struct WhitespacePreTokenizer: PreTokenizer {
    // Oniguruma's Unicode `\w` (UTS #18: Alphabetic, marks, decimal digits, connector punctuation, Join_Control) spelled
    // out, since Swift's `\w` leaves out the marks: "x²" is two pieces, a combining accent or the ZWJ inside an emoji
    // sequence is a word character.
    static let regex: CompiledRegex = {
        do throws(CompiledRegex.CompileError) {
            return try CompiledRegex(
                #"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}\s]+"#)
        } catch {
            preconditionFailure(error.reason)
        }
    }()

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        pieces.flatMap { split($0, by: .regex(Self.regex), behavior: .removed, invert: true) }
    }
}

/// Where Metaspace puts a replacement character in front of a piece.
enum MetaspacePrependScheme: String, Sendable {
    /// Only in front of the piece that starts the input (Llama-2 and Mistral with `legacy: false`).
    case first
    case always
    case never
}

/// SentencePiece's whitespace handling: spaces become `replacement` (`▁`), which is also put in front of the text
/// per `prependScheme`, and with `split` (`splitsOnReplacement`) each `▁` starts a new piece.
struct MetaspacePreTokenizer: PreTokenizer {
    let replacement: Unicode.Scalar
    let prependScheme: MetaspacePrependScheme
    let splitsOnReplacement: Bool

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        let replacementText = String(replacement)
        var output: [TextPiece] = []
        for var piece in pieces where !piece.text.isEmpty {
            var scalars = String.UnicodeScalarView()
            for scalar in piece.text.unicodeScalars {
                if scalar == " " {
                    scalars.append(replacement)
                } else {
                    scalars.append(scalar)
                }
            }
            piece.text = String(scalars)
            let startsWithReplacement = piece.text.unicodeScalars.first == replacement
            switch prependScheme {
            case .always where !startsWithReplacement, .first where !startsWithReplacement && piece.isAtStart:
                piece.text = replacementText + piece.text
            default:
                break
            }
            if splitsOnReplacement {
                let character = replacement
                output += split(piece, by: .characters { $0 == character }, behavior: .mergedWithNext)
            } else if !piece.text.isEmpty {
                output.append(piece)
            }
        }
        return output
    }
}

/// Pre-tokenizers applied in order, each to every piece of the previous one.
struct SequencePreTokenizer: PreTokenizer {
    let preTokenizers: [any PreTokenizer]

    func preTokenize(_ pieces: [TextPiece]) -> [TextPiece] {
        preTokenizers.reduce(pieces) { $1.preTokenize($0) }
    }
}
