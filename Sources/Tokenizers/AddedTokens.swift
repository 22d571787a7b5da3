/// One entry of tokenizer.json's `added_tokens`: text that is cut out of the input before the model sees it and
/// becomes exactly one id.
struct AddedToken: Sendable {
    let id: Int
    let content: String
    /// Skipped by `decode(skipSpecialTokens: true)`. Special or not, every added token is matched in the input
    /// (tokenizers' default; transformers' `split_special_tokens=False`).
    let special: Bool
    /// Matched after normalization (against the normalized content) instead of on the raw input.
    let normalized: Bool
    /// Also takes the whitespace on its left / right.
    let lstrip: Bool
    let rstrip: Bool
    /// Only matched when not inside a word (no letter or digit right before or after it).
    let singleWord: Bool
}

/// Finds added tokens in text, as tokenizers' `AddedVocabulary::find_matches` does with its Aho-Corasick automaton
/// (match kind LeftmostLongest): scanning left to right, the earliest position where some token matches wins, the
/// longest token there is taken, and the scan resumes after it.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let bytes: [UInt8]
        let token: AddedToken
    }

    /// Patterns by first byte, longest first.
    private let patternsByFirstByte: [[Pattern]]
    let isEmpty: Bool

    /// `patterns` pairs each token with the text to look for (its content, or its normalized content).
    init(_ patterns: [(text: String, token: AddedToken)]) {
        var table = [[Pattern]](repeating: [], count: 256)
        for (text, token) in patterns where !text.isEmpty {
            let bytes = Array(text.utf8)
            table[Int(bytes[0])].append(Pattern(bytes: bytes, token: token))
        }
        for index in table.indices { table[index].sort { $0.bytes.count > $1.bytes.count } }
        patternsByFirstByte = table
        isEmpty = patterns.allSatisfy { $0.text.isEmpty }
    }

    /// A segment of text: plain text to tokenize further, or an added token's id.
    enum Segment {
        case text(String, isAtStart: Bool)
        case token(Int)
    }

    /// `text` cut around the added tokens found in it; `isAtStart` says whether `text` itself starts the input.
    /// Empty text segments are dropped.
    func split(_ text: String, isAtStart: Bool) -> [Segment] {
        if isEmpty { return text.isEmpty ? [] : [.text(text, isAtStart: isAtStart)] }
        let bytes = Array(text.utf8)
        var segments: [Segment] = []
        var startOffset = 0
        var position = 0
        func emitText(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            segments.append(.text(String(decoding: bytes[range], as: UTF8.self),
                                  isAtStart: isAtStart && range.lowerBound == 0))
        }
        while position < bytes.count {
            guard let pattern = longestMatch(in: bytes, at: position) else {
                position += 1
                continue
            }
            var start = position
            var stop = position + pattern.bytes.count
            position = stop
            let token = pattern.token
            if token.singleWord {
                let startIsBoundary = start == 0 || !lastScalarIsAlphanumeric(bytes, before: start)
                let stopIsBoundary = stop == bytes.count || !firstScalarIsAlphanumeric(bytes[stop...])
                if !startIsBoundary || !stopIsBoundary { continue }
            }
            if token.lstrip {
                // The whitespace on the left, but not what an earlier match already took.
                start = max(leadingWhitespaceStart(bytes, before: start), startOffset)
            }
            if token.rstrip {
                stop = trailingWhitespaceEnd(bytes, from: stop)
            }
            if startOffset < start { emitText(startOffset..<start) }
            segments.append(.token(token.id))
            startOffset = stop
        }
        if startOffset < bytes.count { emitText(startOffset..<bytes.count) }
        return segments
    }

    private func longestMatch(in bytes: [UInt8], at position: Int) -> Pattern? {
        for pattern in patternsByFirstByte[Int(bytes[position])] {
            let end = position + pattern.bytes.count
            if end <= bytes.count && bytes[position..<end].elementsEqual(pattern.bytes) { return pattern }
        }
        return nil
    }
}

/// Rust's `char::is_alphanumeric`: Alphabetic, or a number category (Nd, Nl, No).
private func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.isAlphabetic || isNumeric(scalar)
}

private func lastScalarIsAlphanumeric(_ bytes: [UInt8], before end: Int) -> Bool {
    guard let (scalar, _) = scalar(endingAt: end, in: bytes) else { return false }
    return isAlphanumeric(scalar)
}

private func firstScalarIsAlphanumeric(_ bytes: ArraySlice<UInt8>) -> Bool {
    var iterator = bytes.prefix(4).makeIterator()
    var decoder = UTF8()
    guard case .scalarValue(let scalar) = decoder.decode(&iterator) else { return false }
    return isAlphanumeric(scalar)
}

/// The character that ends at byte offset `end` of valid UTF-8, and where it starts.
private func scalar(endingAt end: Int, in bytes: [UInt8]) -> (Unicode.Scalar, Int)? {
    guard end > 0 else { return nil }
    var start = end - 1
    while start > 0 && bytes[start] & 0xC0 == 0x80 { start -= 1 }
    var iterator = bytes[start..<end].makeIterator()
    var decoder = UTF8()
    guard case .scalarValue(let scalar) = decoder.decode(&iterator) else { return nil }
    return (scalar, start)
}

/// Where the run of whitespace that ends at `end` begins (`end` when there is none).
private func leadingWhitespaceStart(_ bytes: [UInt8], before end: Int) -> Int {
    var offset = end
    while let (scalar, start) = scalar(endingAt: offset, in: bytes), scalar.properties.isWhitespace { offset = start }
    return offset
}

/// Where the run of whitespace that starts at `start` ends.
private func trailingWhitespaceEnd(_ bytes: [UInt8], from start: Int) -> Int {
    var offset = start
    while offset < bytes.count {
        var iterator = bytes[offset..<min(offset + 4, bytes.count)].makeIterator()
        var decoder = UTF8()
        guard case .scalarValue(let scalar) = decoder.decode(&iterator), scalar.properties.isWhitespace else { break }
        offset += UTF8.width(scalar)
    }
    return offset
}
