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

    /// Reads `path`. With `.auto` each record's format is told from its keys (`prompt_ids` → pre-tokenised, `prompt`
    /// → explicit, else implicit), and a record unlike the first is an error naming its line. A line that is not a
    /// JSON object, a missing key, a value of the wrong kind (a number, a chat-format message list) and a file with no
    /// records are errors naming the file (and the line).
    public static func load(path: String, format: PreferenceFormat = .auto) throws(TrainingError) -> PreferenceDataset {
        var pairs: [PreferencePair] = []
        var resolved: PreferenceFormat? = format == .auto ? nil : format
        var firstLine = 0
        for (lineNumber, value) in try jsonlObjects(path: path) {
            let detected = detectFormat(value)
            if let expected = resolved, detected != expected {
                // An explicit file's record without "prompt" is missing a key; any other difference is a mix.
                if expected == .explicit && detected == .implicit {
                    throw .missingDataKey(path: path, line: lineNumber, key: textKeys.prompt)
                }
                let origin = format == .auto ? "line \(firstLine) is" : "the format asked for is"
                throw .invalidDataRecord(
                    path: path, line: lineNumber,
                    reason: "\(detected.withArticle) record, but \(origin) \(expected.rawValue): every record must "
                        + "have the same format (explicit: prompt/chosen/rejected strings; implicit: chosen/rejected "
                        + "strings; pretokenized: prompt_ids/chosen_ids/rejected_ids)")
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

    private static func detectFormat(_ object: JSONValue) -> PreferenceFormat {
        if object[textKeys.prompt] != nil { return .explicit }
        if idKeys.contains(where: { object[$0.prompt] != nil || object[$0.chosen] != nil }) { return .pretokenized }
        return .implicit
    }

    private static func record(_ object: JSONValue, format: PreferenceFormat, path: String, line: Int)
        throws(TrainingError) -> PreferencePair
    {
        func string(_ key: String) throws(TrainingError) -> String {
            try jsonlString(object, key: key, path: path, line: line)
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
        switch format {
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
        }
    }
}
