/// A place in a template's source: 1-based line and column (columns count Unicode scalars).
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public let line: Int
    public let column: Int

    public var description: String { "line \(line), column \(column)" }
}

/// One token of a template: text outside tags, tag delimiters, and the expression tokens inside tags.
enum TokenKind: Equatable {
    case text(String)
    case variableBegin, variableEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    /// An operator or punctuation: `+ - * / // % ** ~ == != < > <= >= = ( ) [ ] { } , . : |`.
    case symbol(String)
    case end
}

struct Token {
    let kind: TokenKind
    let location: SourceLocation
}

/// Splits a template into tokens as jinja2's lexer does with transformers' settings (`trim_blocks=True`,
/// `lstrip_blocks=True`, `keep_trailing_newline=False`):
/// - line endings become "\n" and one trailing newline of the template is dropped;
/// - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` all whitespace after it;
/// - trim_blocks: the first newline after a `%}` or `#}` is removed (`+%}` keeps it);
/// - lstrip_blocks: spaces and tabs between the start of a line and a `{%` or `{#` are removed (`{%+` keeps them).
struct TemplateLexer {
    private let scalars: [Unicode.Scalar]
    private var position = 0
    private var tokens: [Token] = []
    private var lineStarts: [Int] = [0]

    static func tokenize(_ source: String) throws(ChatTemplateError) -> [Token] {
        var lexer = TemplateLexer(source: source)
        try lexer.run()
        return lexer.tokens
    }

    private init(source: String) {
        var normalized: [Unicode.Scalar] = []
        normalized.reserveCapacity(source.unicodeScalars.count)
        var previousWasCarriageReturn = false
        for scalar in source.unicodeScalars {
            if scalar == "\r" {
                normalized.append("\n")
                previousWasCarriageReturn = true
                continue
            }
            if scalar == "\n" && previousWasCarriageReturn {
                previousWasCarriageReturn = false
                continue
            }
            previousWasCarriageReturn = false
            normalized.append(scalar)
        }
        if normalized.last == "\n" { normalized.removeLast() }
        scalars = normalized
        for (index, scalar) in normalized.enumerated() where scalar == "\n" { lineStarts.append(index + 1) }
    }

    func location(_ offset: Int) -> SourceLocation {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if lineStarts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return SourceLocation(line: low + 1, column: offset - lineStarts[low] + 1)
    }

    private func error(_ message: String, at offset: Int) -> ChatTemplateError {
        .syntax(message: message, location: location(offset))
    }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        position + offset < scalars.count ? scalars[position + offset] : nil
    }

    private func matches(_ text: String, at offset: Int) -> Bool {
        var index = offset
        for scalar in text.unicodeScalars {
            guard index < scalars.count, scalars[index] == scalar else { return false }
            index += 1
        }
        return true
    }

    private mutating func run() throws(ChatTemplateError) {
        var lineStarting = true
        while position < scalars.count {
            // The next tag opener.
            var tagStart = position
            var opener: Unicode.Scalar?
            while tagStart + 1 < scalars.count {
                if scalars[tagStart] == "{", ["{", "%", "#"].contains(scalars[tagStart + 1]) {
                    opener = scalars[tagStart + 1]
                    break
                }
                tagStart += 1
            }
            guard let opener else {
                appendText(Array(scalars[position...]), at: position)
                position = scalars.count
                break
            }
            var text = Array(scalars[position..<tagStart])
            let sign = tagStart + 2 < scalars.count ? scalars[tagStart + 2] : nil
            if sign == "-" {
                while let last = text.last, isPythonWhitespace(last) { text.removeLast() }
            } else if sign != "+", opener != "{" {
                // lstrip_blocks: only when the tag is alone on its line so far.
                let lineStart = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
                if lineStart > 0 || lineStarting,
                   lineStart < text.count, text[lineStart...].allSatisfy({ $0 == " " || $0 == "\t" || isPythonWhitespace($0) }) {
                    text.removeSubrange(lineStart...)
                }
            }
            appendText(text, at: position)
            position = tagStart + 2 + (sign == "-" || sign == "+" ? 1 : 0)
            switch opener {
            case "#":
                lineStarting = try skipComment(from: tagStart)
            case "%":
                if let rawEnd = rawBlockEnd(after: position) {
                    lineStarting = try lexRaw(from: rawEnd, begin: tagStart)
                    continue
                }
                tokens.append(Token(kind: .blockBegin, location: location(tagStart)))
                lineStarting = try lexTag(closer: "%", begin: tagStart)
            default:
                tokens.append(Token(kind: .variableBegin, location: location(tagStart)))
                lineStarting = try lexTag(closer: "}", begin: tagStart)
            }
        }
        tokens.append(Token(kind: .end, location: location(scalars.count)))
    }

    private mutating func appendText(_ text: [Unicode.Scalar], at offset: Int) {
        guard !text.isEmpty else { return }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: text)
        tokens.append(Token(kind: .text(String(view)), location: location(offset)))
    }

    /// Skips past what follows a closing `%}` or `#}`: all whitespace after `-`, else one newline (trim_blocks)
    /// unless `+`. Returns whether what was consumed ended with a newline (jinja2's `line_starting`).
    private mutating func skipAfterTag(stripSign: Unicode.Scalar?, trimBlock: Bool) -> Bool {
        if stripSign == "-" {
            var endedWithNewline = false
            while let scalar = peek(), isPythonWhitespace(scalar) {
                endedWithNewline = scalar == "\n"
                position += 1
            }
            return endedWithNewline
        }
        if trimBlock, stripSign != "+", peek() == "\n" {
            position += 1
            return true
        }
        return false
    }

    private mutating func skipComment(from begin: Int) throws(ChatTemplateError) -> Bool {
        while position + 1 < scalars.count {
            if scalars[position] == "#" && scalars[position + 1] == "}" {
                let sign = position > begin + 2 ? scalars[position - 1] : nil
                position += 2
                return skipAfterTag(stripSign: sign == "-" ? "-" : nil, trimBlock: true)
            }
            position += 1
        }
        throw error("the comment is not closed ('#}' missing)", at: begin)
    }

    /// Lexes the inside of `{% ... %}` (closer "%") or `{{ ... }}` (closer "}").
    private mutating func lexTag(closer: Unicode.Scalar, begin: Int) throws(ChatTemplateError) -> Bool {
        var brackets: [Unicode.Scalar] = []
        while true {
            while let scalar = peek(), isPythonWhitespace(scalar) { position += 1 }
            guard let scalar = peek() else {
                throw error(closer == "%" ? "the tag is not closed ('%}' missing)" : "the tag is not closed ('}}' missing)",
                            at: begin)
            }
            let start = position
            if brackets.isEmpty {
                for sign in ["-", "+", ""] where matches(sign + String(closer) + "}", at: position) {
                    if sign == "+" && closer == "}" { continue }
                    position += sign.unicodeScalars.count + 2
                    tokens.append(Token(kind: closer == "%" ? .blockEnd : .variableEnd, location: location(start)))
                    let signScalar = sign.unicodeScalars.first
                    return skipAfterTag(stripSign: signScalar, trimBlock: closer == "%")
                }
            }
            if scalar == "_" || scalar.properties.isAlphabetic && scalar.isASCII {
                var end = position
                while end < scalars.count, scalars[end] == "_" || (scalars[end].isASCII && scalars[end].properties.isAlphabetic)
                    || ("0"..."9").contains(scalars[end]) {
                    end += 1
                }
                tokens.append(Token(kind: .name(string(position, end)), location: location(start)))
                position = end
            } else if ("0"..."9").contains(scalar) {
                try lexNumber()
            } else if scalar == "'" || scalar == "\"" {
                try lexString(quote: scalar)
            } else {
                let three = ["**", "//", "==", "!=", "<=", ">="]
                var symbol = String(scalar)
                if let next = peek(1), three.contains(String(scalar) + String(next)) {
                    symbol = String(scalar) + String(next)
                } else if !"+-*/%~<>=()[]{},.:|".unicodeScalars.contains(scalar) {
                    throw error("unexpected character '\(scalar)' in a tag", at: start)
                }
                switch symbol {
                case "(", "[", "{": brackets.append(scalar)
                case ")", "]", "}":
                    guard !brackets.isEmpty else { throw error("unexpected '\(symbol)'", at: start) }
                    brackets.removeLast()
                default: break
                }
                position += symbol.unicodeScalars.count
                tokens.append(Token(kind: .symbol(symbol), location: location(start)))
            }
        }
    }

    /// When `{%` is followed by `raw %}` (or `raw -%}`), where its text starts.
    private func rawBlockEnd(after offset: Int) -> Int? {
        var index = offset
        while index < scalars.count, isPythonWhitespace(scalars[index]) { index += 1 }
        guard matches("raw", at: index) else { return nil }
        index += 3
        while index < scalars.count, isPythonWhitespace(scalars[index]) { index += 1 }
        if matches("-%}", at: index) {
            index += 3
            while index < scalars.count, isPythonWhitespace(scalars[index]) { index += 1 }
            return index
        }
        return matches("%}", at: index) ? index + 2 : nil
    }

    /// `{% raw %}...{% endraw %}`: the text in between as it is (`{%- endraw` strips its trailing whitespace, and
    /// the first newline after `%}` goes, as after any block tag).
    private mutating func lexRaw(from start: Int, begin: Int) throws(ChatTemplateError) -> Bool {
        var index = start
        while index + 1 < scalars.count {
            if scalars[index] == "{", scalars[index + 1] == "%" {
                var cursor = index + 2
                let sign = cursor < scalars.count && (scalars[cursor] == "-" || scalars[cursor] == "+")
                    ? scalars[cursor] : nil
                if sign != nil { cursor += 1 }
                while cursor < scalars.count, isPythonWhitespace(scalars[cursor]) { cursor += 1 }
                if matches("endraw", at: cursor) {
                    cursor += 6
                    while cursor < scalars.count, isPythonWhitespace(scalars[cursor]) { cursor += 1 }
                    var closeSign: Unicode.Scalar?
                    if cursor < scalars.count, scalars[cursor] == "-" || scalars[cursor] == "+" {
                        closeSign = scalars[cursor]
                        cursor += 1
                    }
                    guard matches("%}", at: cursor) else { throw error("malformed '{% endraw %}'", at: index) }
                    var text = Array(scalars[start..<index])
                    if sign == "-" { while let last = text.last, isPythonWhitespace(last) { text.removeLast() } }
                    appendText(text, at: start)
                    position = cursor + 2
                    return skipAfterTag(stripSign: closeSign, trimBlock: true)
                }
            }
            index += 1
        }
        throw error("'{% raw %}' is not closed ('{% endraw %}' missing)", at: begin)
    }

    private func string(_ start: Int, _ end: Int) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[start..<end])
        return String(view)
    }

    private mutating func lexNumber() throws(ChatTemplateError) {
        let start = position
        func digits() {
            while let scalar = peek(), ("0"..."9").contains(scalar) || scalar == "_" { position += 1 }
        }
        digits()
        var isFloat = false
        if peek() == ".", let next = peek(1), ("0"..."9").contains(next) {
            isFloat = true
            position += 1
            digits()
        }
        if let e = peek(), e == "e" || e == "E" {
            var offset = 1
            if let sign = peek(1), sign == "+" || sign == "-" { offset = 2 }
            if let digit = peek(offset), ("0"..."9").contains(digit) {
                isFloat = true
                position += offset
                digits()
            }
        }
        let text = string(start, position).replacingOccurrences(of: "_", with: "")
        if isFloat, let value = Double(text) {
            tokens.append(Token(kind: .float(value), location: location(start)))
        } else if let value = Int(text) {
            tokens.append(Token(kind: .integer(value), location: location(start)))
        } else {
            throw error("malformed number '\(text)'", at: start)
        }
    }

    /// A string literal with Python's escapes (`\n`, `\t`, `\\`, `\'`, `\xhh`, `\uhhhh`, ...; an unknown escape
    /// keeps its backslash), as jinja2 decodes them.
    private mutating func lexString(quote: Unicode.Scalar) throws(ChatTemplateError) {
        let start = position
        position += 1
        var result = String.UnicodeScalarView()
        while true {
            guard let scalar = peek() else { throw error("the string is not closed", at: start) }
            position += 1
            if scalar == quote { break }
            guard scalar == "\\" else {
                result.append(scalar)
                continue
            }
            guard let escape = peek() else { throw error("the string is not closed", at: start) }
            position += 1
            switch escape {
            case "n": result.append("\n")
            case "t": result.append("\t")
            case "r": result.append("\r")
            case "\\": result.append("\\")
            case "'": result.append("'")
            case "\"": result.append("\"")
            case "a": result.append("\u{07}")
            case "b": result.append("\u{08}")
            case "f": result.append("\u{0C}")
            case "v": result.append("\u{0B}")
            case "0"..."7":
                var value = escape.value - 0x30
                var count = 1
                while count < 3, let next = peek(), ("0"..."7").contains(next) {
                    value = value * 8 + next.value - 0x30
                    position += 1
                    count += 1
                }
                result.append(Unicode.Scalar(value) ?? "\u{FFFD}")
            case "x", "u", "U":
                let width = escape == "x" ? 2 : escape == "u" ? 4 : 8
                guard position + width <= scalars.count,
                      let value = UInt32(string(position, position + width), radix: 16),
                      let decoded = Unicode.Scalar(value) else {
                    throw error("malformed \\\(escape) escape in a string", at: position - 2)
                }
                position += width
                result.append(decoded)
            case "\n": break
            default:
                result.append("\\")
                result.append(escape)
            }
        }
        tokens.append(Token(kind: .string(String(result)), location: location(start)))
    }
}

/// Python's `str.isspace` for one character: Unicode White_Space plus the ASCII separators 0x1C–0x1F.
func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
    scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
}
