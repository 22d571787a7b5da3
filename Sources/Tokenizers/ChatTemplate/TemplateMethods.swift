import Foundation

/// The Python methods a template may call on values (`text.split('x')`, `message.get('content')`): those of `str`,
/// `dict` and `list` that do not change the value (jinja2's immutable sandbox refuses the others).
enum TemplateMethods {
    static func method(of value: TemplateValue, _ name: String) -> TemplateValue? {
        let body: ((TemplateArguments) throws -> TemplateValue)?
        switch value {
        case .string(let text): body = stringMethod(text, name)
        case .dictionary(let dictionary): body = dictionaryMethod(dictionary, name)
        case .list(let items): body = listMethod(items, name)
        default: body = nil
        }
        return body.map { .function(TemplateFunction(name: "\(value.typeName).\(name)", call: $0)) }
    }

    private static func dictionaryMethod(_ dictionary: TemplateDictionary, _ name: String)
        -> ((TemplateArguments) throws -> TemplateValue)?
    {
        switch name {
        case "get":
            return { arguments in
                guard case .string(let key) = arguments.value(0, "key") ?? .none else {
                    return arguments.value(1, "default") ?? .none
                }
                return dictionary[key] ?? arguments.value(1, "default") ?? .none
            }
        case "keys": return { _ in .list(dictionary.keys.map { .string($0) }) }
        case "values": return { _ in .list(dictionary.entries.map(\.value)) }
        case "items": return { _ in .list(dictionary.entries.map { .list([.string($0.key), $0.value]) }) }
        case "copy": return { _ in .dictionary(dictionary) }
        default: return nil
        }
    }

    private static func listMethod(_ items: [TemplateValue], _ name: String)
        -> ((TemplateArguments) throws -> TemplateValue)?
    {
        switch name {
        case "index":
            return { arguments in
                let wanted = arguments.value(0, "value") ?? .none
                guard let index = items.firstIndex(where: { TemplateOperators.equal($0, wanted) }) else {
                    throw TemplateFailure("\(wanted.pythonRepr) is not in list")
                }
                return .int(index)
            }
        case "count":
            return { arguments in
                let wanted = arguments.value(0, "value") ?? .none
                return .int(items.filter { TemplateOperators.equal($0, wanted) }.count)
            }
        case "copy": return { _ in .list(items) }
        default: return nil
        }
    }

    private static func stringArgument(_ arguments: TemplateArguments, _ position: Int, _ name: String) throws
        -> String?
    {
        switch arguments.value(position, name) {
        case nil, .none?: return nil
        case .string(let text)?: return text
        case let other?: throw TemplateFailure("expected a string for '\(name)', found \(other.typeName)")
        }
    }

    private static func stringMethod(_ text: String, _ name: String) -> ((TemplateArguments) throws -> TemplateValue)? {
        let scalars = Array(text.unicodeScalars)
        switch name {
        case "startswith", "endswith":
            return { arguments in
                let candidates: [TemplateValue]
                switch arguments.value(0, "prefix") {
                case .list(let items)?: candidates = items
                case let value?: candidates = [value]
                case nil: throw TemplateFailure("\(name)() takes at least 1 argument (0 given)")
                }
                for candidate in candidates {
                    guard case .string(let affix) = candidate else {
                        throw TemplateFailure("\(name) first arg must be str or a tuple of str")
                    }
                    let affixScalars = Array(affix.unicodeScalars)
                    if name == "startswith" ? scalars.starts(with: affixScalars)
                        : scalars.count >= affixScalars.count && scalars.suffix(affixScalars.count).elementsEqual(affixScalars) {
                        return .bool(true)
                    }
                }
                return .bool(false)
            }
        case "strip", "lstrip", "rstrip":
            return { arguments in
                .string(pythonStrip(text, characters: try stringArgument(arguments, 0, "chars"),
                                    leading: name != "rstrip", trailing: name != "lstrip"))
            }
        case "split", "rsplit":
            return { arguments in
                let separator = try stringArgument(arguments, 0, "sep")
                let limit = TemplateOperators.integer(arguments.value(1, "maxsplit") ?? .int(-1)) ?? -1
                return .list(try pythonSplit(text, separator: separator, limit: limit, fromRight: name == "rsplit")
                    .map { .string($0) })
            }
        case "splitlines":
            return { _ in .list(pythonSplitLines(text).map { .string($0) }) }
        case "upper": return { _ in .string(text.uppercased()) }
        case "lower": return { _ in .string(text.lowercased()) }
        case "title": return { _ in .string(pythonTitle(text)) }
        case "capitalize": return { _ in .string(pythonCapitalize(text)) }
        case "replace":
            return { arguments in
                guard let old = try stringArgument(arguments, 0, "old"), let new = try stringArgument(arguments, 1, "new")
                else { throw TemplateFailure("replace() takes at least 2 arguments") }
                let count = TemplateOperators.integer(arguments.value(2, "count") ?? .int(-1)) ?? -1
                return .string(pythonReplace(text, old, new, count: count))
            }
        case "find", "rfind", "index", "rindex", "count":
            return { arguments in
                guard let part = try stringArgument(arguments, 0, "sub") else {
                    throw TemplateFailure("\(name)() takes at least 1 argument (0 given)")
                }
                let partScalars = Array(part.unicodeScalars)
                var positions: [Int] = []
                var start = 0
                while let range = scalarRange(of: partScalars, in: scalars, from: start) {
                    positions.append(range.lowerBound)
                    start = partScalars.isEmpty ? range.lowerBound + 1 : range.upperBound
                    if start > scalars.count { break }
                }
                if name == "count" { return .int(positions.count) }
                let found = name.hasPrefix("r") ? positions.last : positions.first
                if found == nil && name.hasSuffix("index") { throw TemplateFailure("substring not found") }
                return .int(found ?? -1)
            }
        case "join":
            return { arguments in
                let items = try iterate(arguments.value(0, "iterable") ?? .none)
                return .string(try items.map { item in
                    guard case .string(let part) = item else {
                        throw TemplateFailure("sequence item: expected str instance, \(item.typeName) found")
                    }
                    return part
                }.joined(separator: text))
            }
        case "isdigit", "isnumeric", "isdecimal":
            return { _ in .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.numericType != nil }) }
        case "isalpha": return { _ in .bool(!scalars.isEmpty && scalars.allSatisfy(\.properties.isAlphabetic)) }
        case "isalnum":
            return { _ in
                .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
            }
        case "isspace": return { _ in .bool(!scalars.isEmpty && scalars.allSatisfy(isPythonWhitespace)) }
        case "isupper": return { _ in .bool(text.contains { $0.isLetter } && text == text.uppercased()) }
        case "islower": return { _ in .bool(text.contains { $0.isLetter } && text == text.lowercased()) }
        case "removeprefix", "removesuffix":
            return { arguments in
                let affix = Array((try stringArgument(arguments, 0, name == "removeprefix" ? "prefix" : "suffix") ?? "")
                    .unicodeScalars)
                var result = scalars[...]
                if name == "removeprefix", scalars.starts(with: affix) { result = scalars.dropFirst(affix.count) }
                if name == "removesuffix", !affix.isEmpty, scalars.suffix(affix.count).elementsEqual(affix) {
                    result = scalars.dropLast(affix.count)
                }
                return .string(String(scalars: result))
            }
        case "format":
            return { arguments in .string(try pythonFormat(text, arguments)) }
        case "ljust", "rjust", "center", "zfill":
            return { arguments in
                let width = TemplateOperators.integer(arguments.value(0, "width") ?? .int(0)) ?? 0
                let fill = name == "zfill" ? "0" : (try stringArgument(arguments, 1, "fillchar") ?? " ")
                let padding = max(0, width - scalars.count)
                // Python's center puts the odd space on the right, except for odd widths of even text.
                let left = name == "ljust" ? 0 : name == "center" ? padding / 2 + (padding & width & 1) : padding
                if name == "zfill", let sign = scalars.first, sign == "-" || sign == "+" {
                    return .string(String(sign) + String(repeating: "0", count: padding)
                        + String(scalars: scalars.dropFirst()))
                }
                return .string(String(repeating: fill, count: left) + text
                    + String(repeating: fill, count: padding - left))
            }
        default:
            return nil
        }
    }
}

extension String {
    /// A string of exactly these scalars (no normalisation).
    public init(scalars: some Sequence<Unicode.Scalar>) {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        self = String(view)
    }
}

/// Python's `str.strip(chars)` and its one-sided forms; no `chars` strips whitespace.
func pythonStrip(_ text: String, characters: String?, leading: Bool = true, trailing: Bool = true) -> String {
    let set = characters.map { Set($0.unicodeScalars) }
    let remove: (Unicode.Scalar) -> Bool = { scalar in set.map { $0.contains(scalar) } ?? isPythonWhitespace(scalar) }
    var scalars = Array(text.unicodeScalars)[...]
    if leading { while let first = scalars.first, remove(first) { scalars.removeFirst() } }
    if trailing { while let last = scalars.last, remove(last) { scalars.removeLast() } }
    return String(scalars: scalars)
}

/// Python's `str.split(sep, maxsplit)` and `rsplit`.
func pythonSplit(_ text: String, separator: String?, limit: Int, fromRight: Bool) throws -> [String] {
    var scalars = Array(text.unicodeScalars)
    if fromRight { scalars.reverse() }
    var parts: [[Unicode.Scalar]] = []
    if let separator {
        var separatorScalars = Array(separator.unicodeScalars)
        guard !separatorScalars.isEmpty else { throw TemplateFailure("empty separator") }
        if fromRight { separatorScalars.reverse() }
        var start = 0
        while limit < 0 || parts.count < limit, let range = scalarRange(of: separatorScalars, in: scalars, from: start) {
            parts.append(Array(scalars[start..<range.lowerBound]))
            start = range.upperBound
        }
        parts.append(Array(scalars[start...]))
    } else {
        var index = 0
        while index < scalars.count {
            while index < scalars.count, isPythonWhitespace(scalars[index]) { index += 1 }
            guard index < scalars.count else { break }
            if limit >= 0 && parts.count == limit {
                var rest = Array(scalars[index...])
                while let last = rest.last, isPythonWhitespace(last) { rest.removeLast() }
                parts.append(rest)
                break
            }
            let start = index
            while index < scalars.count, !isPythonWhitespace(scalars[index]) { index += 1 }
            parts.append(Array(scalars[start..<index]))
        }
    }
    if fromRight { parts = parts.reversed().map { $0.reversed() } }
    return parts.map { String(scalars: $0) }
}

/// Python's `str.splitlines()` (no line ends kept).
func pythonSplitLines(_ text: String) -> [String] {
    let breaks: Set<UInt32> = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]
    var lines: [String] = []
    var current = String.UnicodeScalarView()
    let scalars = Array(text.unicodeScalars)
    var index = 0
    while index < scalars.count {
        let scalar = scalars[index]
        if breaks.contains(scalar.value) {
            lines.append(String(current))
            current = String.UnicodeScalarView()
            if scalar == "\r", index + 1 < scalars.count, scalars[index + 1] == "\n" { index += 1 }
        } else {
            current.append(scalar)
        }
        index += 1
    }
    if !current.isEmpty { lines.append(String(current)) }
    return lines
}

/// Python's `str.replace(old, new, count)`.
func pythonReplace(_ text: String, _ old: String, _ new: String, count: Int = -1) -> String {
    let scalars = Array(text.unicodeScalars)
    let oldScalars = Array(old.unicodeScalars)
    var result = String.UnicodeScalarView()
    var replaced = 0
    if oldScalars.isEmpty {
        // Python inserts `new` before every character and at the end.
        for scalar in scalars {
            if count < 0 || replaced < count {
                result.append(contentsOf: new.unicodeScalars)
                replaced += 1
            }
            result.append(scalar)
        }
        if count < 0 || replaced < count { result.append(contentsOf: new.unicodeScalars) }
        return String(result)
    }
    var start = 0
    while count < 0 || replaced < count, let range = scalarRange(of: oldScalars, in: scalars, from: start) {
        result.append(contentsOf: scalars[start..<range.lowerBound])
        result.append(contentsOf: new.unicodeScalars)
        start = range.upperBound
        replaced += 1
    }
    result.append(contentsOf: scalars[start...])
    return String(result)
}

/// Python's `str.title()`: a cased character after an uncased one is title-cased, others lower-cased.
func pythonTitle(_ text: String) -> String {
    var result = ""
    var previousCased = false
    for scalar in text.unicodeScalars {
        let piece = String(scalar)
        result += previousCased ? piece.lowercased() : piece.uppercased()
        previousCased = scalar.properties.isCased
    }
    return result
}

/// Python's `str.capitalize()`: the first character upper-cased, the rest lower-cased.
func pythonCapitalize(_ text: String) -> String {
    guard let first = text.unicodeScalars.first else { return "" }
    return String(first).uppercased() + String(scalars: text.unicodeScalars.dropFirst()).lowercased()
}

/// Python's `str.format` for `{}`, `{0}`, `{name}` and `{{`/`}}` (no format specs).
func pythonFormat(_ format: String, _ arguments: TemplateArguments) throws -> String {
    var result = ""
    var scalars = Array(format.unicodeScalars)[...]
    var automatic = 0
    while let scalar = scalars.popFirst() {
        if scalar == "{" && scalars.first == "{" || scalar == "}" && scalars.first == "}" {
            scalars.removeFirst()
            result.unicodeScalars.append(scalar)
            continue
        }
        guard scalar == "{" else {
            result.unicodeScalars.append(scalar)
            continue
        }
        var field = ""
        while let next = scalars.popFirst(), next != "}" { field.unicodeScalars.append(next) }
        let value: TemplateValue?
        if field.isEmpty {
            value = automatic < arguments.positional.count ? arguments.positional[automatic] : nil
            automatic += 1
        } else if let index = Int(field) {
            value = index < arguments.positional.count ? arguments.positional[index] : nil
        } else {
            value = arguments.keyword.first { $0.name == field }?.value
        }
        guard let value else { throw TemplateFailure("format(): no argument for '{\(field)}'") }
        result += value.pythonString
    }
    return result
}
