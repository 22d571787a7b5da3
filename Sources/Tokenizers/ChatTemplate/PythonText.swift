import Foundation

// How Python writes values as text: `str()` (what `{{ x }}` prints), `repr()` (inside lists and dicts) and
// transformers' `tojson` filter, `json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`.

extension TemplateValue {
    /// Python's `str(value)`; jinja2's `Undefined` gives "".
    var pythonString: String {
        switch self {
        case .undefined: ""
        case .string(let text): text
        default: pythonRepr
        }
    }

    /// Python's `repr(value)`.
    var pythonRepr: String {
        switch self {
        case .undefined: "Undefined"
        case .none: "None"
        case .bool(let flag): flag ? "True" : "False"
        case .int(let number): String(number)
        case .double(let number): pythonFloatRepr(number)
        case .string(let text): pythonStringRepr(text)
        case .list(let elements): "[" + elements.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .dictionary(let dictionary):
            "{" + dictionary.entries.map { pythonStringRepr($0.key) + ": " + $0.value.pythonRepr }
                .joined(separator: ", ") + "}"
        case .namespace(let namespace):
            "<Namespace " + TemplateValue.dictionary(namespace.attributes).pythonRepr + ">"
        case .function(let function): "<function \(function.name)>"
        }
    }
}

/// Python's `repr(float)`: the shortest text that reads back as the same double ("1.0", "1e-05", "1e+16").
func pythonFloatRepr(_ number: Double) -> String {
    if number.isNaN { return "nan" }
    if number.isInfinite { return number < 0 ? "-inf" : "inf" }
    // Swift's description is the shortest round-trip text too, with Python's exponent form ("1e-05", "1e+16");
    // the two differ only between 2^53 and 1e16, where Swift already writes an exponent and Python does not (such
    // doubles are integers).
    if abs(number) >= 0x1p53, abs(number) < 1e16 { return "\(Int(number)).0" }
    return "\(number)"
}

/// Python's `repr(str)`: single quotes unless the text holds a single quote and no double quote.
func pythonStringRepr(_ text: String) -> String {
    let quote: Unicode.Scalar = text.unicodeScalars.contains("'") && !text.unicodeScalars.contains("\"") ? "\"" : "'"
    return quoted(text, quote: quote) { scalar in
        if let shared = sharedEscapes[scalar] { return shared }
        if scalar == quote { return "\\" + String(quote) }
        if isPythonPrintable(scalar) { return nil }
        let value = scalar.value
        return value < 0x100 ? String(format: "\\x%02x", value)
            : value < 0x10000 ? String(format: "\\u%04x", value) : String(format: "\\U%08x", value)
    }
}

/// The escapes Python's `repr` and `json.dumps` write alike.
private let sharedEscapes: [Unicode.Scalar: String] = ["\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"]

/// `text` between two `quote`s, each character as `escape` writes it (nil: as it is).
private func quoted(_ text: String, quote: Unicode.Scalar, escape: (Unicode.Scalar) -> String?) -> String {
    var result = String.UnicodeScalarView()
    result.append(quote)
    for scalar in text.unicodeScalars {
        if let escaped = escape(scalar) { result.append(contentsOf: escaped.unicodeScalars) } else { result.append(scalar) }
    }
    result.append(quote)
    return String(result)
}

/// Python's `str.isprintable` for one character: not a control, format, surrogate, private-use, unassigned or
/// separator character, except the ASCII space.
private func isPythonPrintable(_ scalar: Unicode.Scalar) -> Bool {
    if scalar == " " { return true }
    switch scalar.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator,
         .spaceSeparator:
        return false
    default:
        return true
    }
}

/// The options of transformers' `tojson` filter.
struct JSONDumpOptions {
    var indent: String?
    var itemSeparator: String
    var keySeparator: String
    var sortKeys = false

    /// json.dumps' defaults: `", "` between items without indent, `","` with it.
    init(indent: String?, separators: (String, String)?, sortKeys: Bool) {
        self.indent = indent
        itemSeparator = separators?.0 ?? (indent == nil ? ", " : ",")
        keySeparator = separators?.1 ?? ": "
        self.sortKeys = sortKeys
    }
}

/// `json.dumps(value, ensure_ascii=False, ...)`. Fails on what JSON cannot hold (Undefined, functions), as
/// json.dumps does.
func pythonJSONDump(_ value: TemplateValue, options: JSONDumpOptions, level: Int = 0) throws -> String {
    switch value {
    case .none: return "null"
    case .bool(let flag): return flag ? "true" : "false"
    case .int(let number): return String(number)
    case .double(let number):
        if number.isNaN { return "NaN" }
        if number.isInfinite { return number < 0 ? "-Infinity" : "Infinity" }
        return pythonFloatRepr(number)
    case .string(let text): return jsonQuoted(text)
    case .list(let elements):
        if elements.isEmpty { return "[]" }
        let parts = try elements.map { try pythonJSONDump($0, options: options, level: level + 1) }
        return wrap(parts, open: "[", close: "]", options: options, level: level)
    case .dictionary(let dictionary):
        if dictionary.isEmpty { return "{}" }
        var entries = dictionary.entries
        if options.sortKeys {
            entries.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
        }
        let parts = try entries.map {
            jsonQuoted($0.key) + options.keySeparator + (try pythonJSONDump($0.value, options: options, level: level + 1))
        }
        return wrap(parts, open: "{", close: "}", options: options, level: level)
    case .undefined, .namespace, .function:
        throw TemplateFailure("Object of type \(value.typeName) is not JSON serializable")
    }
}

private func wrap(_ parts: [String], open: String, close: String, options: JSONDumpOptions, level: Int) -> String {
    guard let indent = options.indent else {
        return open + parts.joined(separator: options.itemSeparator) + close
    }
    let inner = "\n" + String(repeating: indent, count: level + 1)
    let outer = "\n" + String(repeating: indent, count: level)
    return open + inner + parts.joined(separator: options.itemSeparator + inner) + outer + close
}

/// A JSON string as json.dumps writes it with `ensure_ascii=False`: only `"`, `\` and control characters escaped.
func jsonQuoted(_ text: String) -> String {
    quoted(text, quote: "\"") { scalar in
        if let shared = sharedEscapes[scalar] { return shared }
        switch scalar {
        case "\"": return "\\\""
        case "\u{08}": return "\\b"
        case "\u{0C}": return "\\f"
        default: return scalar.value < 0x20 ? String(format: "\\u%04x", scalar.value) : nil
        }
    }
}
