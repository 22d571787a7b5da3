import Foundation

// The package's reader for JSON it does not own (tokenizer.json, tokenizer_config.json, preference-data rows); the
// files onnx-dpo writes are Codable. Foundation's JSONSerialization would hand back `[String: Any]`, whose keys
// compare by Swift's canonical equivalence ("é" == "e\u{301}"): two distinct vocabulary entries could collapse into
// one. This reader keeps every object as an ordered list of key/value pairs with the strings exactly as written.

/// A parsed JSON value; objects keep their keys in file order.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])

    /// The value under `key` when this is an object (first occurrence; keys compared by their UTF-8 bytes).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let entries) = self else { return nil }
        let keyBytes = Array(key.utf8)
        return entries.first { $0.key.utf8.elementsEqual(keyBytes) }?.value
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// A short name of the value's kind, for error messages.
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

extension JSONValue: Equatable {
    /// Python's `==` on the values `json.loads` makes: objects compare as sets of keys (their order does not matter),
    /// strings by Unicode scalars, numbers by value.
    public static func == (left: JSONValue, right: JSONValue) -> Bool {
        switch (left, right) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && a.allSatisfy { entry in right[entry.key].map { $0 == entry.value } ?? false }
        default: return false
        }
    }
}

/// Why a byte buffer is not JSON: the message and where (1-based line and column).
public struct JSONSyntaxError: Error, Sendable {
    public let message: String
    public let line: Int
    public let column: Int
}

/// Parses a whole UTF-8 JSON document (RFC 8259; invalid UTF-8 inside strings is replaced by U+FFFD, lone
/// surrogate escapes likewise, as serde_json's lossy readers do).
public func parseJSON(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
    var parser = JSONParser(bytes: bytes)
    parser.skipWhitespace()
    let value = try parser.parseValue(depth: 0)
    parser.skipWhitespace()
    if parser.position != bytes.count { throw parser.error("unexpected text after the JSON value") }
    return value
}

private struct JSONParser {
    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    func error(_ message: String) -> JSONSyntaxError {
        var line = 1
        var column = 1
        for byte in bytes[..<min(position, bytes.count)] {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return JSONSyntaxError(message: message, line: line, column: column)
    }

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard depth < 512 else { throw error("nesting deeper than 512 levels") }
        guard position < bytes.count else { throw error("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default:
            throw error("unexpected character '\(String(decoding: [bytes[position]], as: UTF8.self))'")
        }
    }

    mutating func expectWord(_ word: StaticString) throws(JSONSyntaxError) {
        let count = word.utf8CodeUnitCount
        let matches = word.withUTF8Buffer { buffer in
            position + count <= bytes.count && bytes[position..<position + count].elementsEqual(buffer)
        }
        guard matches else { throw error("unexpected character") }
        position += count
    }

    mutating func parseObject(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        position += 1
        var entries: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(entries)
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw error("expected a string key")
            }
            let key = try parseString()
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            entries.append((key, value))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input in an object") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
            } else if bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(entries)
            } else {
                throw error("expected ',' or '}'")
            }
        }
    }

    mutating func parseArray(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input in an array") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
            } else if bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            } else {
                throw error("expected ',' or ']'")
            }
        }
    }

    mutating func parseNumber() throws(JSONSyntaxError) -> Double {
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        guard position < bytes.count, isDigit(bytes[position]) else { throw error("malformed number") }
        while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw error("malformed number") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            guard position < bytes.count, isDigit(bytes[position]) else { throw error("malformed number") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        guard let value = Double(String(decoding: bytes[start..<position], as: UTF8.self)) else {
            throw error("malformed number")
        }
        return value
    }

    mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("bad \\u escape")
            }
            value = value * 16 + digit
            position += 1
        }
        return value
    }

    mutating func parseString() throws(JSONSyntaxError) -> String {
        position += 1
        let start = position
        // Fast path: no escapes.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: bytes[start..<position], as: UTF8.self)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in a string") }
            position += 1
        }
        var buffer = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                return String(decoding: buffer, as: UTF8.self)
            }
            if byte < 0x20 { throw error("control character in a string") }
            guard byte == UInt8(ascii: "\\") else {
                buffer.append(byte)
                position += 1
                continue
            }
            position += 1
            guard position < bytes.count else { break }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""): buffer.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): buffer.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "/"): buffer.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): buffer.append(0x08)
            case UInt8(ascii: "f"): buffer.append(0x0C)
            case UInt8(ascii: "n"): buffer.append(0x0A)
            case UInt8(ascii: "r"): buffer.append(0x0D)
            case UInt8(ascii: "t"): buffer.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800..<0xDC00).contains(code), position + 6 <= bytes.count,
                   bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                    let save = position
                    position += 2
                    let low = try parseHex4()
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        position = save
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                buffer.append(contentsOf: String(scalar).utf8)
            default:
                throw error("bad escape '\\\(String(decoding: [escape], as: UTF8.self))'")
            }
        }
        throw error("unterminated string")
    }
}

/// Reads typed fields out of tokenizer.json, turning every mismatch into a `TokenizerError` that names the file and
/// the JSON path of the component (`pre_tokenizer.pretokenizers[1].pattern`).
struct TokenizerConfigReader {
    /// The tokenizer.json path, for messages.
    let path: String

    func invalid(_ location: String, _ reason: String) -> TokenizerError {
        .invalidTokenizer(path: path, reason: "\(location): \(reason)")
    }

    func unsupported(_ component: String, type: String) -> TokenizerError {
        .unsupportedTokenizerComponent(path: path, component: component, type: type)
    }

    /// The `type` field of a component object.
    func type(of value: JSONValue, at location: String) throws(TokenizerError) -> String {
        guard case .object = value else { throw invalid(location, "expected an object, found \(value.kindName)") }
        return try string(value, "type", at: location)
    }

    func string(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> String {
        guard let value = object[key] else { throw invalid(location, "missing field '\(key)'") }
        guard case .string(let text) = value else {
            throw invalid("\(location).\(key)", "expected a string, found \(value.kindName)")
        }
        return text
    }

    func optionalString(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> String? {
        guard let value = object[key], !value.isNull else { return nil }
        guard case .string(let text) = value else {
            throw invalid("\(location).\(key)", "expected a string, found \(value.kindName)")
        }
        return text
    }

    func bool(_ object: JSONValue, _ key: String, default defaultValue: Bool, at location: String)
        throws(TokenizerError) -> Bool
    {
        guard let value = object[key], !value.isNull else { return defaultValue }
        guard case .bool(let flag) = value else {
            throw invalid("\(location).\(key)", "expected a boolean, found \(value.kindName)")
        }
        return flag
    }

    func int(_ value: JSONValue, at location: String) throws(TokenizerError) -> Int {
        guard case .number(let number) = value, number.rounded() == number, abs(number) < 1e15 else {
            throw invalid(location, "expected an integer, found \(value.kindName)")
        }
        return Int(number)
    }

    /// A token id: an integer in `0...Int32.max` (tokenizers' ids are u32; the merge table packs them in 32 bits).
    func tokenID(_ value: JSONValue, at location: String) throws(TokenizerError) -> Int {
        let id = try int(value, at: location)
        guard (0...Int(Int32.max)).contains(id) else {
            throw invalid(location, "token id \(id) is outside 0...\(Int32.max)")
        }
        return id
    }

    /// Field `key` of `object`, a token id (see `tokenID(_:at:)`).
    func tokenID(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> Int {
        guard let value = object[key], !value.isNull else { throw invalid(location, "missing field '\(key)'") }
        return try tokenID(value, at: "\(location).\(key)")
    }

    func int(_ object: JSONValue, _ key: String, default defaultValue: Int? = nil, at location: String)
        throws(TokenizerError) -> Int
    {
        guard let value = object[key], !value.isNull else {
            if let defaultValue { return defaultValue }
            throw invalid(location, "missing field '\(key)'")
        }
        return try int(value, at: "\(location).\(key)")
    }

    func array(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> [JSONValue] {
        guard let value = object[key] else { throw invalid(location, "missing field '\(key)'") }
        guard case .array(let elements) = value else {
            throw invalid("\(location).\(key)", "expected an array, found \(value.kindName)")
        }
        return elements
    }

    /// A single character field (Metaspace's `replacement`, Strip's `content`): exactly one Unicode scalar, as a
    /// Rust `char`.
    func character(_ object: JSONValue, _ key: String, at location: String) throws(TokenizerError) -> Unicode.Scalar {
        let text = try string(object, key, at: location)
        let scalars = Array(text.unicodeScalars)
        guard scalars.count == 1 else { throw invalid("\(location).\(key)", "expected one character, found '\(text)'") }
        return scalars[0]
    }
}

extension JSONValue: Codable {
    /// Reads any JSON value through a `Decoder`. `JSONDecoder` hands objects over as dictionaries, so their keys come
    /// back sorted, not in file order; use `parseJSON` where the order matters.
    public init(from decoder: any Swift.Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            let entries = try container.decode([String: JSONValue].self)
            self = .object(entries.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) })
        }
    }

    /// Writes the value; an object's keys in its order (an encoder's `sortedKeys` sorts them).
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .null:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let value):
            var container = encoder.singleValueContainer()
            try container.encode(value)
        case .number(let value):
            var container = encoder.singleValueContainer()
            // Integral numbers as integers, as Python's json writes the ints it read.
            if value.rounded() == value, abs(value) < 9.0e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value):
            var container = encoder.singleValueContainer()
            try container.encode(value)
        case .array(let elements):
            var container = encoder.unkeyedContainer()
            for element in elements { try container.encode(element) }
        case .object(let entries):
            var container = encoder.container(keyedBy: JSONKey.self)
            for (key, value) in entries { try container.encode(value, forKey: JSONKey(key)) }
        }
    }

    private struct JSONKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ key: String) { stringValue = key }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
