import Foundation

/// A piece of (normalized) text on its way from the input string to the model.
struct TextPiece: Sendable {
    /// The piece's text.
    var text: String
    /// Whether the piece begins at offset 0 of the original input: what Metaspace's `prepend_scheme: "first"` checks
    /// (tokenizers' `offsets_original().0 == 0`). Pieces cut after the start of a piece are never at the start.
    var isAtStart: Bool
}

/// How a split treats the delimiters it finds (tokenizers' `SplitDelimiterBehavior`).
enum SplitDelimiterBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// A compiled regular expression with tokenizers' (Oniguruma, Ruby syntax) conventions: matching by Unicode scalar
/// (Rust `char`), not by grapheme cluster, and `^`/`$` at line boundaries.
///
/// Engine: for the GPT-2, Llama-3 and Qwen2 patterns, a hand-written matcher (`KnownSplitPattern`: ~15 ms per MB
/// against ~1.2 s for Swift's Regex, and tested against it on the corpus and on random text). Any other pattern uses
/// Swift's `Regex`: it compiles these regexes (`\p{L}`, `\p{N}`, `(?i:'s|'t|...)`, `\s+(?!\S)`), agrees with Oniguruma
/// at scalar granularity on the whole test corpus (including `\s` on U+000B, U+0085, U+2028, U+00A0), is the same code
/// on every platform, and its Unicode tables come with the Swift toolchain rather than with the OS's ICU.
/// NSRegularExpression finds the same pieces on the corpus and is about 4x faster than Swift's Regex (~0.27 s per MB),
/// but its behaviour follows the OS's ICU version, so it is only the fallback: a pattern Swift's parser rejects (some
/// Oniguruma-only syntax) is retried with NSRegularExpression, whose syntax is closer to Oniguruma's; only if both
/// reject it does loading fail.
struct CompiledRegex: @unchecked Sendable {
    // @unchecked: NSRegularExpression is immutable after creation and documented as safe to share between threads.
    private enum Engine {
        case handWritten(KnownSplitPattern)
        case swift(Regex<AnyRegexOutput>)
        case foundation(NSRegularExpression)
    }

    /// The pattern as written in tokenizer.json.
    let pattern: String
    private let engine: Engine

    /// Why a pattern compiles with neither engine.
    struct CompileError: Error {
        let reason: String
    }

    /// Which engine to compile with: the hand-written matcher for a known pattern, else Swift's Regex, else
    /// NSRegularExpression; or one engine only (for tests that compare them).
    enum EngineChoice {
        case automatic
        case swift
        case foundation
    }

    /// Compiles `pattern`.
    init(_ pattern: String, engine choice: EngineChoice = .automatic) throws(CompileError) {
        self.pattern = pattern
        if choice == .automatic, let known = KnownSplitPattern(pattern: pattern) {
            engine = .handWritten(known)
            return
        }
        if choice != .foundation, let regex = try? Regex(pattern) {
            engine = .swift(regex.matchingSemantics(.unicodeScalar).anchorsMatchLineEndings(true))
            return
        }
        do {
            engine = .foundation(try NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines]))
        } catch {
            throw CompileError(reason: "regex \(pattern.debugDescription) compiles neither as a Swift Regex nor as an "
                + "NSRegularExpression (\(error.localizedDescription))")
        }
    }

    /// The UTF-8 offset ranges of successive non-overlapping matches in `text`.
    func matchRanges(in text: String) -> [Range<Int>] {
        let utf8 = text.utf8
        var ranges: [Range<Int>] = []
        switch engine {
        case .handWritten(let known):
            return known.matchRanges(in: text)
        case .swift(let regex):
            for match in text.matches(of: regex) {
                let lower = utf8.distance(from: utf8.startIndex, to: match.range.lowerBound)
                let upper = utf8.distance(from: utf8.startIndex, to: match.range.upperBound)
                ranges.append(lower..<upper)
            }
        case .foundation(let regex):
            // NSRange counts UTF-16 units. Not `Range(_:in:)`, which refuses ranges that cut a grapheme cluster (a
            // match may end between "\r" and "\n").
            let utf16 = text.utf16
            func utf8Offset(_ utf16Offset: Int) -> Int {
                let index = utf16.index(utf16.startIndex, offsetBy: utf16Offset)
                return utf8.distance(from: utf8.startIndex, to: index)
            }
            for match in regex.matches(in: text, range: NSRange(location: 0, length: utf16.count)) {
                ranges.append(utf8Offset(match.range.lowerBound)..<utf8Offset(match.range.upperBound))
            }
        }
        return ranges
    }
}

/// What a split looks for (tokenizers' `Pattern` trait): a literal string, a regex, or a per-character test.
enum TextPattern: Sendable {
    /// Non-overlapping occurrences of these UTF-8 bytes, left to right.
    case literal([UInt8])
    case regex(CompiledRegex)
    /// Every single character for which the test holds is its own match.
    case characters(@Sendable (Unicode.Scalar) -> Bool)

    /// The whole of `text` cut into consecutive ranges (UTF-8 offsets), each flagged as a match or not; `[(0..<0,
    /// false)]` for an empty text (tokenizers' `find_matches`).
    func findMatches(in text: String) -> [(range: Range<Int>, isMatch: Bool)] {
        let count = text.utf8.count
        if count == 0 { return [(0..<0, false)] }
        var result: [(range: Range<Int>, isMatch: Bool)] = []
        var previous = 0
        func add(_ match: Range<Int>) {
            if previous != match.lowerBound { result.append((previous..<match.lowerBound, false)) }
            result.append((match, true))
            previous = match.upperBound
        }
        switch self {
        case .literal(let needle):
            guard !needle.isEmpty else { break }
            let search = { (haystack: UnsafeBufferPointer<UInt8>) in
                var start = 0
                while start + needle.count <= haystack.count {
                    if haystack[start] == needle[0]
                        && (1..<needle.count).allSatisfy({ haystack[start + $0] == needle[$0] }) {
                        add(start..<start + needle.count)
                        start += needle.count
                    } else {
                        start += 1
                    }
                }
            }
            if text.utf8.withContiguousStorageIfAvailable(search) == nil {
                Array(text.utf8).withUnsafeBufferPointer(search)
            }
        case .regex(let regex):
            for match in regex.matchRanges(in: text) { add(match) }
        case .characters(let test):
            var offset = 0
            for scalar in text.unicodeScalars {
                let length = UTF8.width(scalar)
                if test(scalar) { add(offset..<offset + length) }
                offset += length
            }
        }
        if previous != count { result.append((previous..<count, false)) }
        return result
    }
}

extension TokenizerConfigReader {
    /// A `{"String": "..."}` or `{"Regex": "..."}` pattern field (a bare string is taken as a literal).
    func pattern(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> TextPattern {
        guard let value = object[key] else { throw invalid(location, "missing field '\(key)'") }
        if case .string(let literal) = value { return .literal(Array(literal.utf8)) }
        if case .string(let literal)? = value["String"] { return .literal(Array(literal.utf8)) }
        if case .string(let expression)? = value["Regex"] {
            do {
                return .regex(try CompiledRegex(expression))
            } catch {
                throw invalid("\(location).\(key)", error.reason)
            }
        }
        throw invalid("\(location).\(key)", "expected {\"String\": ...} or {\"Regex\": ...}")
    }
}

/// The text between two UTF-8 offsets of `text` (offsets on character boundaries).
func utf8Slice(_ text: String, _ range: Range<Int>) -> String {
    let utf8 = text.utf8
    let lower = utf8.index(utf8.startIndex, offsetBy: range.lowerBound)
    let upper = utf8.index(lower, offsetBy: range.count)
    // Not `text[lower..<upper]`: String's subscript rounds indices down to grapheme-cluster boundaries.
    return String(decoding: utf8[lower..<upper], as: UTF8.self)
}

/// Cuts `piece` with `pattern`, keeping or merging the delimiters as `behavior` says, and drops empty pieces
/// (tokenizers' `NormalizedString::split`). With `invert`, what the pattern matches is the content and the rest the
/// delimiters.
func split(_ piece: TextPiece, by pattern: TextPattern, behavior: SplitDelimiterBehavior, invert: Bool = false)
    -> [TextPiece]
{
    var matches = pattern.findMatches(in: piece.text)
    if invert { matches = matches.map { ($0.range, !$0.isMatch) } }
    // (range, remove)
    var splits: [(range: Range<Int>, remove: Bool)] = []
    switch behavior {
    case .isolated:
        splits = matches.map { ($0.range, false) }
    case .removed:
        splits = matches.map { ($0.range, $0.isMatch) }
    case .contiguous:
        var previousMatch = false
        for (range, isMatch) in matches {
            if isMatch == previousMatch, let last = splits.last {
                splits[splits.count - 1].range = last.range.lowerBound..<range.upperBound
            } else {
                splits.append((range, false))
            }
            previousMatch = isMatch
        }
    case .mergedWithPrevious:
        var previousMatch = false
        for (range, isMatch) in matches {
            if isMatch && !previousMatch, let last = splits.last {
                splits[splits.count - 1].range = last.range.lowerBound..<range.upperBound
            } else {
                splits.append((range, false))
            }
            previousMatch = isMatch
        }
    case .mergedWithNext:
        var previousMatch = false
        for (range, isMatch) in matches.reversed() {
            if isMatch && !previousMatch, let last = splits.last {
                splits[splits.count - 1].range = range.lowerBound..<last.range.upperBound
            } else {
                splits.append((range, false))
            }
            previousMatch = isMatch
        }
        splits.reverse()
    }
    var pieces: [TextPiece] = []
    pieces.reserveCapacity(splits.count)
    for (range, remove) in splits where !remove && !range.isEmpty {
        let text = range.count == piece.text.utf8.count ? piece.text : utf8Slice(piece.text, range)
        pieces.append(TextPiece(text: text, isAtStart: piece.isAtStart && range.lowerBound == 0))
    }
    return pieces
}
