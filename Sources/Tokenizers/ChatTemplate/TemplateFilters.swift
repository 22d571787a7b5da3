import Foundation

/// jinja2's built-in filters that chat templates use, with transformers' `tojson`. Each takes the value before the
/// `|` and the filter's arguments.
enum TemplateFilters {
    typealias Filter = @Sendable (TemplateValue, TemplateArguments) throws -> TemplateValue

    static let all: [String: Filter] = {
        var filters: [String: Filter] = [
            "trim": { value, arguments in
                try arguments.expect(atMost: 1, names: ["chars"], function: "trim")
                let characters: String? = if case .string(let text) = arguments.value(0, "chars") { text } else { nil }
                return .string(pythonStrip(value.pythonString, characters: characters))
            },
            "upper": { value, _ in .string(value.pythonString.uppercased()) },
            "lower": { value, _ in .string(value.pythonString.lowercased()) },
            "capitalize": { value, _ in .string(pythonCapitalize(value.pythonString)) },
            "title": { value, _ in .string(jinjaTitle(value.pythonString)) },
            "string": { value, _ in .string(value.pythonString) },
            "safe": { value, _ in value },
            "escape": { value, _ in .string(htmlEscape(value.pythonString)) },
            "replace": { value, arguments in
                try arguments.expect(atMost: 3, names: ["old", "new", "count"], function: "replace")
                let count = TemplateOperators.integer(arguments.value(2, "count") ?? .int(-1)) ?? -1
                return .string(pythonReplace(value.pythonString, (arguments.value(0, "old") ?? .none).pythonString,
                                             (arguments.value(1, "new") ?? .none).pythonString, count: count))
            },
            "length": { value, _ in .int(try length(value)) },
            "tojson": tojson,
            "join": { value, arguments in
                try arguments.expect(atMost: 2, names: ["d", "attribute"], function: "join")
                var items = try iterate(value)
                if let attributeName = arguments.value(1, "attribute") {
                    items = try items.map { try lookUpPath($0, attributeName) }
                }
                let separator = (arguments.value(0, "d") ?? .string("")).pythonString
                return .string(items.map(\.pythonString).joined(separator: separator))
            },
            "first": { value, _ in
                try iterate(value).first ?? .undefined(hint: "No first item, sequence was empty.")
            },
            "last": { value, _ in
                try iterate(value).last ?? .undefined(hint: "No last item, sequence was empty.")
            },
            "default": { value, arguments in
                try arguments.expect(atMost: 2, names: ["default_value", "boolean"], function: "default")
                let useDefault = (arguments.value(1, "boolean")?.isTruthy ?? false) ? !value.isTruthy : value.isUndefined
                return useDefault ? arguments.value(0, "default_value") ?? .string("") : value
            },
            "items": { value, _ in
                switch value {
                case .undefined: return .list([])
                case .dictionary(let dictionary): return .list(dictionary.entries.map { .list([.string($0.key), $0.value]) })
                default: throw TemplateFailure("Can only get item pairs from a mapping.")
                }
            },
            "dictsort": { value, arguments in
                guard case .dictionary(let dictionary) = value else {
                    throw TemplateFailure("dictsort needs a mapping, found \(value.typeName)")
                }
                let caseSensitive = arguments.value(0, "case_sensitive")?.isTruthy ?? false
                let byValue = (arguments.value(1, "by") ?? .string("key")).pythonString == "value"
                let reverse = arguments.value(2, "reverse")?.isTruthy ?? false
                let pairs = try sortValues(dictionary.entries.map { TemplateValue.list([.string($0.key), $0.value]) },
                                           caseSensitive: caseSensitive, reverse: reverse) { try item(of: $0, .int(byValue ? 1 : 0)) }
                return .list(pairs)
            },
            "list": { value, _ in .list(try iterate(value)) },
            "unique": { value, _ in
                var seen: [TemplateValue] = []
                for item in try iterate(value) where !seen.contains(where: { TemplateOperators.equal($0, item) }) {
                    seen.append(item)
                }
                return .list(seen)
            },
            "reverse": { value, _ in
                if case .string(let text) = value { return .string(String(scalars: text.unicodeScalars.reversed())) }
                return .list(try iterate(value).reversed())
            },
            "sort": { value, arguments in
                let reverse = arguments.value(0, "reverse")?.isTruthy ?? false
                let caseSensitive = arguments.value(1, "case_sensitive")?.isTruthy ?? false
                let attributeName = arguments.value(2, "attribute")
                return .list(try sortValues(try iterate(value), caseSensitive: caseSensitive, reverse: reverse) {
                    item in try attributeName.map { name in try lookUpPath(item, name) } ?? item
                })
            },
            "int": { value, arguments in
                let fallback = arguments.value(0, "default") ?? .int(0)
                switch value {
                case .int, .bool: return .int(TemplateOperators.integer(value) ?? 0)
                case .double(let number): return number.isFinite ? .int(Int(number)) : fallback
                case .string(let text):
                    let base = TemplateOperators.integer(arguments.value(1, "base") ?? .int(10)) ?? 10
                    let trimmed = pythonStrip(text, characters: nil).replacingOccurrences(of: "_", with: "")
                    if let number = Int(trimmed, radix: base) { return .int(number) }
                    if let number = Double(trimmed), number.isFinite { return .int(Int(number)) }
                    return fallback
                default: return fallback
                }
            },
            "float": { value, arguments in
                let fallback = arguments.value(0, "default") ?? .double(0)
                switch value {
                case .string(let text): return Double(pythonStrip(text, characters: nil)).map(TemplateValue.double) ?? fallback
                default: return TemplateOperators.double(value).map(TemplateValue.double) ?? fallback
                }
            },
            "abs": { value, _ in
                if let number = TemplateOperators.integer(value) { return .int(abs(number)) }
                if case .double(let number) = value { return .double(abs(number)) }
                throw TemplateFailure("bad operand type for abs(): '\(value.typeName)'")
            },
            "round": { value, arguments in
                guard let number = TemplateOperators.double(value) else {
                    throw TemplateFailure("round needs a number, found \(value.typeName)")
                }
                let precision = TemplateOperators.integer(arguments.value(0, "precision") ?? .int(0)) ?? 0
                let scale = pow(10, Double(precision))
                let method = (arguments.value(1, "method") ?? .string("common")).pythonString
                // "common" is Python's round(): halves to even.
                let rule: FloatingPointRoundingRule = method == "ceil" ? .up : method == "floor" ? .down
                    : .toNearestOrEven
                return .double((number * scale).rounded(rule) / scale)
            },
            "sum": { value, arguments in
                var total = arguments.value(1, "start") ?? .int(0)
                for item in try iterate(value) {
                    let term = try arguments.value(0, "attribute").map { try lookUpPath(item, $0) } ?? item
                    total = try TemplateOperators.arithmetic("+", total, term)
                }
                return total
            },
            "indent": { value, arguments in
                try arguments.expect(atMost: 3, names: ["width", "first", "blank"], function: "indent")
                let indentation: String
                switch arguments.value(0, "width") ?? .int(4) {
                case .string(let text): indentation = text
                case let width: indentation = String(repeating: " ", count: TemplateOperators.integer(width) ?? 4)
                }
                return .string(jinjaIndent(value.pythonString, indentation: indentation,
                                           first: arguments.value(1, "first")?.isTruthy ?? false,
                                           blank: arguments.value(2, "blank")?.isTruthy ?? false))
            },
            "center": { value, arguments in
                guard case .function(let center)? = TemplateMethods.method(of: .string(value.pythonString), "center")
                else { return value }
                return try center.call(arguments)
            },
            "wordcount": { value, _ in .int(try pythonSplit(value.pythonString, separator: nil, limit: -1, fromRight: false).count) },
            "format": { value, arguments in
                .string(try TemplateOperators.percentFormat(value.pythonString, .list(arguments.positional)))
            },
            // Python attributes only (methods, a namespace's attributes), never a dict's items, as jinja2's `attr`.
            "attr": { value, arguments in
                let name = (arguments.value(0, "name") ?? .none).pythonString
                if case .namespace = value { return try attribute(of: value, name) }
                return TemplateMethods.method(of: value, name)
                    ?? .undefined(hint: "'\(value.typeName) object' has no attribute '\(name)'")
            },
            "map": { value, arguments in
                let items = try iterate(value)
                if let attributeName = arguments.keyword.first(where: { $0.name == "attribute" })?.value {
                    let fallback = arguments.keyword.first { $0.name == "default" }?.value
                    return .list(try items.map { item in
                        let found = try lookUpPath(item, attributeName)
                        if found.isUndefined, let fallback { return fallback }
                        return found
                    })
                }
                guard case .string(let filterName)? = arguments.positional.first else {
                    throw TemplateFailure("map() needs a filter name or attribute=")
                }
                guard let filter = all[filterName] else { throw TemplateFailure("no filter named '\(filterName)'") }
                var rest = arguments
                rest.positional.removeFirst()
                return .list(try items.map { try filter($0, rest) })
            },
            "select": { value, arguments in try select(value, arguments, attribute: false, keep: true) },
            "reject": { value, arguments in try select(value, arguments, attribute: false, keep: false) },
            "selectattr": { value, arguments in try select(value, arguments, attribute: true, keep: true) },
            "rejectattr": { value, arguments in try select(value, arguments, attribute: true, keep: false) },
        ]
        filters["count"] = filters["length"]
        filters["d"] = filters["default"]
        filters["e"] = filters["escape"]
        filters["min"] = { value, arguments in try extreme(value, arguments, wantLargest: false) }
        filters["max"] = { value, arguments in try extreme(value, arguments, wantLargest: true) }
        return filters
    }()

    /// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
    private static func tojson(_ value: TemplateValue, _ arguments: TemplateArguments) throws -> TemplateValue {
        try arguments.expect(atMost: 4, names: ["ensure_ascii", "indent", "separators", "sort_keys"], function: "tojson")
        let indent: String?
        switch arguments.value(1, "indent") {
        case nil, .none?: indent = nil
        case .string(let text)?: indent = text
        case let width?: indent = String(repeating: " ", count: max(0, TemplateOperators.integer(width) ?? 0))
        }
        var separators: (String, String)?
        if case .list(let pair)? = arguments.value(2, "separators"), pair.count == 2 {
            separators = (pair[0].pythonString, pair[1].pythonString)
        }
        let options = JSONDumpOptions(indent: indent, separators: separators,
                                      sortKeys: arguments.value(3, "sort_keys")?.isTruthy ?? false)
        var text = try pythonJSONDump(value, options: options)
        if arguments.value(0, "ensure_ascii")?.isTruthy ?? false { text = asciiEscaped(text) }
        return .string(text)
    }

    /// `len(value)`; Undefined has length 0.
    static func length(_ value: TemplateValue) throws -> Int {
        switch value {
        case .undefined: 0
        case .string(let text): text.unicodeScalars.count
        case .list(let items): items.count
        case .dictionary(let dictionary): dictionary.count
        default: throw TemplateFailure("object of type '\(value.typeName)' has no len()")
        }
    }

    /// `select`/`reject` (a test on each item, or truthiness) and `selectattr`/`rejectattr` (on an attribute).
    private static func select(_ value: TemplateValue, _ arguments: TemplateArguments, attribute: Bool, keep: Bool)
        throws -> TemplateValue
    {
        var rest = arguments.positional
        var attributeName: TemplateValue?
        if attribute {
            guard !rest.isEmpty else { throw TemplateFailure("selectattr/rejectattr need an attribute name") }
            attributeName = rest.removeFirst()
        }
        var test: TemplateTests.Test?
        if !rest.isEmpty {
            let testName = rest.removeFirst().pythonString
            guard let found = TemplateTests.all[testName] else { throw TemplateFailure("no test named '\(testName)'") }
            test = found
        }
        let testArguments = TemplateArguments(positional: rest, keyword: [])
        return .list(try iterate(value).filter { item in
            let subject = try attributeName.map { try lookUpPath(item, $0) } ?? item
            let passes = try test.map { try $0(subject, testArguments) } ?? subject.isTruthy
            return passes == keep
        })
    }

    private static func extreme(_ value: TemplateValue, _ arguments: TemplateArguments, wantLargest: Bool) throws
        -> TemplateValue
    {
        let caseSensitive = arguments.value(0, "case_sensitive")?.isTruthy ?? false
        let sorted = try sortValues(try iterate(value), caseSensitive: caseSensitive, reverse: false) {
            item in try arguments.value(1, "attribute").map { name in try lookUpPath(item, name) } ?? item
        }
        return (wantLargest ? sorted.last : sorted.first) ?? .undefined(hint: "No aggregated item, sequence was empty.")
    }
}

/// jinja2's attribute getter for `map(attribute=)`, `selectattr`, `sort(attribute=)`: "a.b" or "0" walk items.
func lookUpPath(_ value: TemplateValue, _ path: TemplateValue) throws -> TemplateValue {
    guard case .string(let text) = path else { return try item(of: value, path) }
    var current = value
    for part in text.split(separator: ".") {
        current = try item(of: current, Int(part).map(TemplateValue.int) ?? .string(String(part)))
    }
    return current
}

/// A stable sort by key, strings compared case-insensitively unless `caseSensitive` (jinja2's `sort`, `dictsort`).
private func sortValues(_ items: [TemplateValue], caseSensitive: Bool, reverse: Bool,
                        key: (TemplateValue) throws -> TemplateValue) throws -> [TemplateValue] {
    var keyed = try items.enumerated().map { (offset, item) -> (Int, TemplateValue, TemplateValue) in
        var sortKey = try key(item)
        if !caseSensitive, case .string(let text) = sortKey { sortKey = .string(text.lowercased()) }
        return (offset, sortKey, item)
    }
    var failure: Error?
    keyed.sort { left, right in
        do {
            if try TemplateOperators.less(left.1, right.1) { return !reverse }
            if try TemplateOperators.less(right.1, left.1) { return reverse }
        } catch { failure = error }
        return left.0 < right.0
    }
    if let failure { throw failure }
    return keyed.map(\.2)
}

/// jinja2's `title` filter: each word (split at spaces, `-`, `(`, `{`, `[`, `<`) gets its first character upper-cased
/// and the rest lower-cased.
private func jinjaTitle(_ text: String) -> String {
    var result = ""
    var atWordStart = true
    for scalar in text.unicodeScalars {
        let isBoundary = isPythonWhitespace(scalar) || "-({[<".unicodeScalars.contains(scalar)
        let piece = String(scalar)
        result += isBoundary ? piece : atWordStart ? piece.uppercased() : piece.lowercased()
        atWordStart = isBoundary
    }
    return result
}

/// jinja2's `indent` filter (which appends "\n" before splitting, so a trailing newline is not indented).
private func jinjaIndent(_ text: String, indentation: String, first: Bool, blank: Bool) -> String {
    var lines = pythonSplitLines(text + "\n")
    var result: String
    if blank {
        result = lines.joined(separator: "\n" + indentation)
    } else {
        result = lines.removeFirst()
        if !lines.isEmpty { result += "\n" + lines.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n") }
    }
    return first ? indentation + result : result
}

private func htmlEscape(_ text: String) -> String {
    var result = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&#34;"
        case "'": result += "&#39;"
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}

/// JSON text with every non-ASCII character as `\uXXXX` (surrogate pairs above U+FFFF), json.dumps' `ensure_ascii`.
private func asciiEscaped(_ text: String) -> String {
    var result = ""
    for scalar in text.unicodeScalars {
        if scalar.isASCII {
            result.unicodeScalars.append(scalar)
        } else {
            for unit in String(scalar).utf16 { result += String(format: "\\u%04x", unit) }
        }
    }
    return result
}
