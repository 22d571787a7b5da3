import Tokenizers
import Foundation

/// A preference dataset read from JSONL: one JSON object per line, blank lines skipped, every record in one format
/// (`PreferenceFormat`).
public struct PreferenceDataset: Sendable {
    /// The file that was read.
    public let path: String
    /// The records' format (never `.auto`).
    public let format: PreferenceFormat
    /// The records in file order.
    public let pairs: [PreferencePair]

    public init(path: String, format: PreferenceFormat, pairs: [PreferencePair]) {
        self.path = path
        self.format = format
        self.pairs = pairs
    }

    /// The key names of each format, as written in the files, mapped to Swift names only here.
    private static let textKeys = (prompt: "prompt", chosen: "chosen", rejected: "rejected")
    private static let idKeys = [
        (prompt: "prompt_ids", chosen: "chosen_ids", rejected: "rejected_ids"),  // TRL 1.x
        (prompt: "prompt_input_ids", chosen: "chosen_input_ids", rejected: "rejected_input_ids"),  // TRL < 1.0
    ]

    /// Reads `path`. With `.auto` each record's format is told from its keys (`prompt_ids` → pre-tokenised; a list of
    /// `{"role", ...}` messages under `prompt`, `chosen` or `rejected` → conversational, as TRL's `is_conversational`
    /// tells; `prompt` → explicit, else implicit), and a record unlike the first is an error naming its line. A line
    /// that is not a JSON object, a missing key, a value of the wrong kind (a number, a message without `role` or
    /// `content`) and a file with no records are errors naming the file (and the line).
    public static func load(path: String, format: PreferenceFormat = .auto) throws(TrainingError) -> PreferenceDataset {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file"
            throw .emptyDataset(path: path, reason: reason)
        }
        var pairs: [PreferencePair] = []
        var resolved: PreferenceFormat? = format == .auto ? nil : format
        var firstLine = 0
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            // Blank lines (and a lone "\r" of CRLF files) carry no record, as in `datasets`' JSON reader.
            guard line.contains(where: { !isJSONWhitespace($0) }) else { continue }
            let value: JSONValue
            do {
                value = try parseJSON(Array(line))
            } catch {
                throw .invalidDataRecord(
                    path: path, line: lineNumber, reason: "not valid JSON: \(error.message) at column \(error.column)")
            }
            guard case .object = value else {
                throw .invalidDataRecord(
                    path: path, line: lineNumber, reason: "expected a JSON object, found \(value.kindName)")
            }
            let detected = detectFormat(value)
            if let expected = resolved, detected != expected {
                // An explicit file's record without "prompt" is missing a key; any other difference is a mix.
                if (expected, detected) == (.explicit, .implicit)
                    || (expected, detected) == (.conversational, .implicitConversational) {
                    throw .missingDataKey(path: path, line: lineNumber, key: textKeys.prompt)
                }
                let origin = format == .auto ? "line \(firstLine) is" : "the format asked for is"
                throw .invalidDataRecord(
                    path: path, line: lineNumber,
                    reason: "\(detected.withArticle) record, but \(origin) \(expected.rawValue): every record must "
                        + "have the same format (explicit: prompt/chosen/rejected strings; implicit: chosen/rejected "
                        + "strings; pretokenized: prompt_ids/chosen_ids/rejected_ids; conversational: "
                        + "prompt/chosen/rejected message lists; implicit_conversational: chosen/rejected message lists)")
            }
            if resolved == nil {
                resolved = detected
                firstLine = lineNumber
            }
            pairs.append(try record(value, format: resolved ?? detected, path: path, line: lineNumber))
        }
        guard let resolved, !pairs.isEmpty else { throw .emptyDataset(path: path, reason: "the file has no records") }
        return PreferenceDataset(path: path, format: resolved, pairs: pairs)
    }

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    private static func detectFormat(_ object: JSONValue) -> PreferenceFormat {
        let isConversational = [textKeys.prompt, textKeys.chosen, textKeys.rejected].contains { key in
            if case .array(let elements)? = object[key], case .object? = elements.first, elements.first?["role"] != nil {
                return true
            }
            return false
        }
        if isConversational { return object[textKeys.prompt] != nil ? .conversational : .implicitConversational }
        if object[textKeys.prompt] != nil { return .explicit }
        if idKeys.contains(where: { object[$0.prompt] != nil || object[$0.chosen] != nil }) { return .pretokenized }
        return .implicit
    }

    private static func record(_ object: JSONValue, format: PreferenceFormat, path: String, line: Int)
        throws(TrainingError) -> PreferencePair
    {
        func string(_ key: String) throws(TrainingError) -> String {
            guard let value = object[key] else { throw .missingDataKey(path: path, line: line, key: key) }
            switch value {
            case .string(let text):
                return text
            default:
                throw .invalidDataRecord(
                    path: path, line: line, reason: "'\(key)' must be a string, found \(value.kindName)")
            }
        }
        func ids(_ key: String) throws(TrainingError) -> [Int] {
            guard let value = object[key] else { throw .missingDataKey(path: path, line: line, key: key) }
            guard case .array(let elements) = value else {
                throw .invalidDataRecord(
                    path: path, line: line, reason: "'\(key)' must be an array of token ids, found \(value.kindName)")
            }
            var result: [Int] = []
            result.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                guard case .number(let number) = element, number >= 0, number.rounded() == number, number < 1e15 else {
                    throw .invalidDataRecord(
                        path: path, line: line,
                        reason: "'\(key)'[\(index)] must be a non-negative integer token id, found \(element.kindName)")
                }
                result.append(Int(number))
            }
            return result
        }

        let preference = try self.preference(object, path: path, line: line)
        func messages(_ key: String) throws(TrainingError) -> [JSONValue] {
            guard let value = object[key] else { throw .missingDataKey(path: path, line: line, key: key) }
            guard case .array(let elements) = value else {
                throw .invalidDataRecord(
                    path: path, line: line, reason: "'\(key)' must be a list of messages, found \(value.kindName)")
            }
            for (index, message) in elements.enumerated() {
                guard case .object = message else {
                    throw .invalidDataRecord(
                        path: path, line: line,
                        reason: "'\(key)'[\(index)] must be a message object, found \(message.kindName)")
                }
                guard case .string? = message["role"] else {
                    throw .invalidDataRecord(
                        path: path, line: line, reason: "'\(key)'[\(index)] has no 'role' string")
                }
                guard message["content"] != nil else {
                    throw .invalidDataRecord(path: path, line: line, reason: "'\(key)'[\(index)] has no 'content'")
                }
            }
            return elements
        }
        func conversation(prompt: [JSONValue]?) throws(TrainingError) -> PreferencePair {
            var tools = object["tools"]
            if case .string(let text)? = tools {
                // TRL: `json.loads(tools)` when the column holds JSON text.
                do { tools = try parseJSON(Array(text.utf8)) } catch {
                    throw .invalidDataRecord(
                        path: path, line: line, reason: "'tools' is text but not JSON: \(error.message)")
                }
            }
            var variables: [String: JSONValue] = [:]
            switch object["chat_template_kwargs"] {
            case nil, .null?: break
            case .object(let entries)?: for (key, value) in entries { variables[key] = value }
            case let other?:
                throw .invalidDataRecord(
                    path: path, line: line, reason: "'chat_template_kwargs' must be an object, found \(other.kindName)")
            }
            return PreferencePair(
                content: .conversational(Conversation(
                    prompt: prompt, chosen: try messages(textKeys.chosen), rejected: try messages(textKeys.rejected),
                    tools: tools.flatMap { $0.isNull ? nil : $0 }, templateVariables: variables)),
                line: line, preference: preference)
        }

        switch format {
        case .conversational:
            return try conversation(prompt: try messages(textKeys.prompt))
        case .implicitConversational:
            return try conversation(prompt: nil)
        case .explicit:
            return PreferencePair(
                content: .explicit(
                    prompt: try string(textKeys.prompt), chosen: try string(textKeys.chosen),
                    rejected: try string(textKeys.rejected)),
                line: line, preference: preference)
        case .implicit, .auto:
            return PreferencePair(
                content: .implicit(chosen: try string(textKeys.chosen), rejected: try string(textKeys.rejected)),
                line: line, preference: preference)
        case .pretokenized:
            let keys = idKeys.first { object[$0.prompt] != nil || object[$0.chosen] != nil } ?? idKeys[0]
            return PreferencePair(
                content: .pretokenized(
                    prompt: try ids(keys.prompt), chosen: try ids(keys.chosen), rejected: try ids(keys.rejected)),
                line: line, preference: preference)
        }
    }
}

extension PreferenceDataset {
    /// The key of a record's optional soft label (`PreferencePair.preference`), in every format.
    static let preferenceKey = "preference"

    /// A record's `preference`: absent or null gives nil; anything but a number in [0, 1] is an error naming the line.
    static func preference(_ object: JSONValue, path: String, line: Int) throws(TrainingError) -> Double? {
        guard let value = object[preferenceKey] else { return nil }
        switch value {
        case .null:
            return nil
        case .number(let number) where (0...1).contains(number):
            return number
        case .number(let number):
            throw .invalidDataRecord(
                path: path, line: line,
                reason: "'\(preferenceKey)' must be a probability in [0, 1] that chosen is better, found \(number)")
        default:
            throw .invalidDataRecord(
                path: path, line: line,
                reason: "'\(preferenceKey)' must be a number in [0, 1] (the probability that chosen is better), found "
                    + value.kindName)
        }
    }
}

extension PreferenceFormat {
    /// "an explicit", "an implicit", "a pretokenized", for messages.
    var withArticle: String {
        switch self {
        case .auto: "an auto"
        case .explicit: "an explicit"
        case .implicit: "an implicit"
        case .pretokenized: "a pretokenized"
        case .conversational: "a conversational"
        case .implicitConversational: "an implicit_conversational"
        }
    }
}
