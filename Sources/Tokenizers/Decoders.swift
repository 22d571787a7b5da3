/// A `decoder` of tokenizer.json: turns the list of token strings back into text. Each decoder maps a list of
/// strings to a list of strings (tokenizers' `decode_chain`); the final strings are concatenated.
protocol Decoder: Sendable {
    func decodeChain(_ tokens: [String]) -> [String]
}

/// Builds the decoder a tokenizer.json object describes; unknown types fail here, at load.
func makeDecoder(_ json: JSONValue, at location: String, reader: TokenizerConfigReader)
    throws(TokenizerError) -> any Decoder
{
    let type = try reader.type(of: json, at: location)
    switch type {
    case "ByteLevel":
        return ByteLevelDecoder()
    case "Metaspace":
        let scheme: MetaspacePrependScheme
        if let name = try reader.optionalString(json, "prepend_scheme", at: location) {
            guard let parsed = MetaspacePrependScheme(rawValue: name) else {
                throw reader.invalid("\(location).prepend_scheme", "expected first, always or never, found '\(name)'")
            }
            scheme = parsed
        } else {
            scheme = try reader.bool(json, "add_prefix_space", default: true, at: location) ? .always : .never
        }
        return MetaspaceDecoder(replacement: try reader.character(json, "replacement", at: location),
                                prependScheme: scheme)
    case "ByteFallback":
        return ByteFallbackDecoder()
    case "Fuse":
        return FuseDecoder()
    case "Strip":
        return StripDecoder(content: try reader.character(json, "content", at: location),
                            start: try reader.int(json, "start", default: 0, at: location),
                            stop: try reader.int(json, "stop", default: 0, at: location))
    case "Replace":
        return ReplaceDecoder(pattern: try reader.pattern(json, "pattern", at: location),
                              content: try reader.string(json, "content", at: location))
    case "BPEDecoder":
        return BPESuffixDecoder(suffix: try reader.optionalString(json, "suffix", at: location) ?? "</w>")
    case "WordPiece":
        return WordPieceDecoder(prefix: try reader.optionalString(json, "prefix", at: location) ?? "##",
                                cleanup: try reader.bool(json, "cleanup", default: true, at: location))
    case "Sequence":
        var decoders: [any Decoder] = []
        for (index, element) in try reader.array(json, "decoders", at: location).enumerated() {
            decoders.append(try makeDecoder(element, at: "\(location).decoders[\(index)]", reader: reader))
        }
        return SequenceDecoder(decoders: decoders)
    default:
        // CTC.
        throw reader.unsupported(location, type: type)
    }
}

/// Undoes GPT-2's byte-to-character map over all tokens at once, then reads the bytes as UTF-8, replacing each
/// ill-formed sequence by U+FFFD (Rust's `String::from_utf8_lossy`, same maximal-subpart rule as Swift's decoder).
/// A token holding a character outside the map (an added token such as `▁x`) contributes its own UTF-8 bytes.
struct ByteLevelDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] {
        var bytes: [UInt8] = []
        for token in tokens {
            let start = bytes.count
            var mapped = true
            for scalar in token.unicodeScalars {
                guard let byte = ByteLevelTable.scalarToByte[scalar.value] else {
                    mapped = false
                    break
                }
                bytes.append(byte)
            }
            if !mapped {
                bytes.removeSubrange(start...)
                bytes.append(contentsOf: token.utf8)
            }
        }
        return [String(decoding: bytes, as: UTF8.self)]
    }
}

/// `replacement` back to spaces; in the first token (unless the prepend scheme is `never`) the replacement characters
/// are dropped, undoing the prefix the pre-tokenizer added.
struct MetaspaceDecoder: Decoder {
    let replacement: Unicode.Scalar
    let prependScheme: MetaspacePrependScheme

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { index, token in
            var scalars = String.UnicodeScalarView()
            for scalar in token.unicodeScalars {
                if scalar == replacement {
                    if index == 0 && prependScheme != .never { continue }
                    scalars.append(" ")
                } else {
                    scalars.append(scalar)
                }
            }
            return String(scalars)
        }
    }
}

/// Runs of `<0xNN>` tokens become the text their bytes spell; a run that is not valid UTF-8 becomes one U+FFFD per
/// byte (tokenizers' ByteFallback decoder).
struct ByteFallbackDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] {
        var output: [String] = []
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if let text = strictUTF8(pending) {
                output.append(text)
            } else {
                output += Array(repeating: "\u{FFFD}", count: pending.count)
            }
            pending.removeAll()
        }
        for token in tokens {
            if let byte = Self.byte(of: token) {
                pending.append(byte)
            } else {
                flush()
                output.append(token)
            }
        }
        flush()
        return output
    }

    /// The byte of a `<0xNN>` token: six bytes long, two characters read by Rust's `u8::from_str_radix(_, 16)`,
    /// which also accepts a leading `+` and lower-case digits.
    static func byte(of token: String) -> UInt8? {
        let bytes = Array(token.utf8)
        guard bytes.count == 6, bytes[0] == UInt8(ascii: "<"), bytes[1] == UInt8(ascii: "0"),
              bytes[2] == UInt8(ascii: "x"), bytes[5] == UInt8(ascii: ">") else { return nil }
        let digits = bytes[3] == UInt8(ascii: "+") ? [bytes[4]] : [bytes[3], bytes[4]]
        var value = 0
        for digit in digits {
            guard let digitValue = hexDigitValue(digit) else { return nil }
            value = value * 16 + digitValue
        }
        return UInt8(value)
    }
}

private func hexDigitValue(_ byte: UInt8) -> Int? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A")) + 10
    default: nil
    }
}

/// `bytes` as a String when they are well-formed UTF-8, else nil (Rust's `String::from_utf8`).
func strictUTF8(_ bytes: [UInt8]) -> String? {
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    loop: while true {
        switch decoder.decode(&iterator) {
        case .scalarValue: continue
        case .emptyInput: break loop
        case .error: return nil
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// All tokens joined into one.
struct FuseDecoder: Decoder {
    func decodeChain(_ tokens: [String]) -> [String] { [tokens.joined()] }
}

/// Up to `start` leading and `stop` trailing `content` characters removed from every token.
struct StripDecoder: Decoder {
    let content: Unicode.Scalar
    let start: Int
    let stop: Int

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { token in
            let scalars = token.unicodeScalars
            var lower = scalars.startIndex
            var removed = 0
            while removed < start && lower < scalars.endIndex && scalars[lower] == content {
                lower = scalars.index(after: lower)
                removed += 1
            }
            var upper = scalars.endIndex
            removed = 0
            while removed < stop && upper > lower && scalars[scalars.index(before: upper)] == content {
                upper = scalars.index(before: upper)
                removed += 1
            }
            if lower == scalars.startIndex && upper == scalars.endIndex { return token }
            return String(Substring(scalars[lower..<upper]))
        }
    }
}

/// Every match of `pattern` in every token replaced by `content`.
struct ReplaceDecoder: Decoder {
    let pattern: TextPattern
    let content: String

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.map { replaceMatches(of: pattern, in: $0, with: content) }
    }
}

/// The end-of-word suffix becomes a space, except in the last token where it is dropped (tokenizers' BPEDecoder).
struct BPESuffixDecoder: Decoder {
    let suffix: String

    func decodeChain(_ tokens: [String]) -> [String] {
        let pattern = TextPattern.literal(Array(suffix.utf8))
        return tokens.enumerated().map { index, token in
            replaceMatches(of: pattern, in: token, with: index == tokens.count - 1 ? "" : " ")
        }
    }
}

/// WordPiece's decoder: a token without the `prefix` starts a new word (a space in front), one with it continues the
/// previous word; with `cleanup`, BERT's spacing fixes (" ." → ".", " n't" → "n't", …).
struct WordPieceDecoder: Decoder {
    let prefix: String
    let cleanup: Bool

    private static let cleanups: [(String, String)] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
        (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ]

    func decodeChain(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { index, token in
            var text = token
            if index != 0 {
                if !prefix.isEmpty && text.utf8.starts(with: prefix.utf8) {
                    text = utf8Slice(text, prefix.utf8.count..<text.utf8.count)
                } else if prefix.isEmpty {
                    // replacen("", "", 1) leaves the token as it is.
                } else {
                    text = " " + text
                }
            }
            if cleanup {
                for (from, to) in Self.cleanups {
                    text = replaceMatches(of: .literal(Array(from.utf8)), in: text, with: to)
                }
            }
            return text
        }
    }
}

/// Decoders applied in order.
struct SequenceDecoder: Decoder {
    let decoders: [any Decoder]

    func decodeChain(_ tokens: [String]) -> [String] { decoders.reduce(tokens) { $1.decodeChain($0) } }
}
