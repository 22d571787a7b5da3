import Foundation

/// A `normalizer` of tokenizer.json: rewrites text before pre-tokenization. Runs separately on each stretch of
/// input between added tokens that are matched on the raw text.
protocol Normalizer: Sendable {
    func normalize(_ text: String) -> String
    /// `normalize` on a piece, which also stops being "at the start" of the input when the normalizer deletes its
    /// first characters (tokenizers' alignments then map the new first character past offset 0, and Metaspace's
    /// `prepend_scheme: "first"` no longer adds its `▁`).
    func normalize(_ piece: TextPiece) -> TextPiece
}

extension Normalizer {
    func normalize(_ piece: TextPiece) -> TextPiece {
        TextPiece(text: normalize(piece.text), isAtStart: piece.isAtStart)
    }
}

/// Builds the normalizer a tokenizer.json object describes; unknown types fail here, at load.
func makeNormalizer(_ json: JSONValue, at location: String, reader: TokenizerConfigReader)
    throws(TokenizerError) -> any Normalizer
{
    let type = try reader.type(of: json, at: location)
    switch type {
    case "NFC": return UnicodeNormalization(form: .nfc)
    case "NFD": return UnicodeNormalization(form: .nfd)
    case "NFKC": return UnicodeNormalization(form: .nfkc)
    case "NFKD": return UnicodeNormalization(form: .nfkd)
    case "Lowercase": return LowercaseNormalizer()
    case "StripAccents": return StripAccentsNormalizer()
    case "ByteLevel": return ByteLevelNormalizer()
    case "Prepend": return PrependNormalizer(prefix: try reader.string(json, "prepend", at: location))
    case "Replace":
        return ReplaceNormalizer(pattern: try reader.pattern(json, "pattern", at: location),
                                 content: try reader.string(json, "content", at: location))
    case "Strip":
        return StripNormalizer(left: try reader.bool(json, "strip_left", default: true, at: location),
                               right: try reader.bool(json, "strip_right", default: true, at: location))
    case "Sequence":
        var normalizers: [any Normalizer] = []
        for (index, element) in try reader.array(json, "normalizers", at: location).enumerated() {
            normalizers.append(try makeNormalizer(element, at: "\(location).normalizers[\(index)]", reader: reader))
        }
        return SequenceNormalizer(normalizers: normalizers)
    default:
        // BertNormalizer, Precompiled (SentencePiece's charsmap), Nmt, Strip variants of other libraries.
        throw reader.unsupported(location, type: type)
    }
}

/// NFC, NFD, NFKC or NFKD (Unicode Standard Annex #15), through Foundation.
struct UnicodeNormalization: Normalizer {
    enum Form { case nfc, nfd, nfkc, nfkd }
    let form: Form

    func normalize(_ text: String) -> String {
        switch form {
        case .nfc: text.precomposedStringWithCanonicalMapping
        case .nfd: text.decomposedStringWithCanonicalMapping
        case .nfkc: text.precomposedStringWithCompatibilityMapping
        case .nfkd: text.decomposedStringWithCompatibilityMapping
        }
    }
}

/// Each character replaced by its full lowercase mapping, one character at a time (Rust's `char::to_lowercase`,
/// so no context rules: a final capital sigma becomes σ, not ς).
struct LowercaseNormalizer: Normalizer {
    func normalize(_ text: String) -> String {
        var output = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                output.append(scalar.properties.isUppercase ? Unicode.Scalar(scalar.value + 32)! : scalar)
            } else {
                output.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(output)
    }
}

/// Removes combining marks (general categories Mn, Mc, Me), usually after NFD/NFKD.
struct StripAccentsNormalizer: Normalizer {
    func normalize(_ text: String) -> String {
        var output = String.UnicodeScalarView()
        for scalar in text.unicodeScalars where !isCombiningMark(scalar) { output.append(scalar) }
        return String(output)
    }

    func normalize(_ piece: TextPiece) -> TextPiece {
        let deletesStart = piece.text.unicodeScalars.first.map(isCombiningMark) ?? false
        return TextPiece(text: normalize(piece.text), isAtStart: piece.isAtStart && !deletesStart)
    }
}

func isCombiningMark(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .nonspacingMark, .spacingMark, .enclosingMark: true
    default: false
    }
}

/// Every byte mapped to GPT-2's printable character (the normalizer form of the ByteLevel pre-tokenizer).
struct ByteLevelNormalizer: Normalizer {
    func normalize(_ text: String) -> String { ByteLevelTable.map(text) }
}

/// `prefix` in front of any non-empty text (SentencePiece's dummy prefix in Llama-2's legacy conversion).
struct PrependNormalizer: Normalizer {
    let prefix: String

    func normalize(_ text: String) -> String { text.isEmpty ? text : prefix + text }
}

/// Every match of `pattern` replaced by `content` (taken literally, no `$1` groups).
struct ReplaceNormalizer: Normalizer {
    let pattern: TextPattern
    let content: String

    func normalize(_ text: String) -> String { replaceMatches(of: pattern, in: text, with: content) }

    func normalize(_ piece: TextPiece) -> TextPiece {
        // Replacement text takes the place (and the original offsets) of what it replaces; only an empty
        // replacement of a match at offset 0 moves the start.
        let first = pattern.findMatches(in: piece.text).first
        let deletesStart = content.isEmpty && first?.isMatch == true && first?.range.isEmpty == false
        return TextPiece(text: normalize(piece.text), isAtStart: piece.isAtStart && !deletesStart)
    }
}

func replaceMatches(of pattern: TextPattern, in text: String, with content: String) -> String {
    let matches = pattern.findMatches(in: text)
    if matches.count == 1 && !matches[0].isMatch { return text }
    var output = ""
    output.reserveCapacity(text.utf8.count)
    for (range, isMatch) in matches {
        output += isMatch ? content : utf8Slice(text, range)
    }
    return output
}

/// Leading and/or trailing whitespace (Unicode White_Space) removed.
struct StripNormalizer: Normalizer {
    let left: Bool
    let right: Bool

    func normalize(_ text: String) -> String {
        let scalars = text.unicodeScalars
        var start = scalars.startIndex
        var end = scalars.endIndex
        if left {
            while start < end, scalars[start].properties.isWhitespace { start = scalars.index(after: start) }
        }
        if right {
            while end > start, scalars[scalars.index(before: end)].properties.isWhitespace {
                end = scalars.index(before: end)
            }
        }
        return String(Substring(scalars[start..<end]))
    }

    func normalize(_ piece: TextPiece) -> TextPiece {
        let deletesStart = left && (piece.text.unicodeScalars.first?.properties.isWhitespace ?? false)
        return TextPiece(text: normalize(piece.text), isAtStart: piece.isAtStart && !deletesStart)
    }
}

/// Normalizers applied in order.
struct SequenceNormalizer: Normalizer {
    let normalizers: [any Normalizer]

    func normalize(_ text: String) -> String {
        normalizers.reduce(text) { $1.normalize($0) }
    }

    func normalize(_ piece: TextPiece) -> TextPiece {
        normalizers.reduce(piece) { $1.normalize($0) }
    }
}
