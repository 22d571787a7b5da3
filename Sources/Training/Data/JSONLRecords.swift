import Foundation
import Tokenizers

// What every JSONL data reader shares (preference pairs, unpaired rows): the file's records as JSON objects with
// their line numbers, and a string value read with the errors a user can act on.

/// The JSON objects of the JSONL file at `path`, with their 1-based line numbers. Blank lines (and a lone "\r" of
/// CRLF files) carry no record, as in `datasets`' JSON reader. A missing or unreadable file, a line that is not JSON
/// and a value that is not an object are errors naming the file (and the line).
func jsonlObjects(path: String) throws(TrainingError) -> [(line: Int, object: JSONValue)] {
    guard let data = FileManager.default.contents(atPath: path) else {
        let reason = FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file"
        throw .emptyDataset(path: path, reason: reason)
    }
    var objects: [(line: Int, object: JSONValue)] = []
    var lineNumber = 0
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        lineNumber += 1
        guard line.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) else { continue }
        let value: JSONValue
        do {
            value = try parseJSON(Array(line))
        } catch {
            throw .invalidDataRecord(
                path: path, line: lineNumber, reason: "not valid JSON: \(error.message) at column \(error.column)")
        }
        guard case .object = value else {
            throw .invalidDataRecord(path: path, line: lineNumber, reason: "expected a JSON object, found \(value.kindName)")
        }
        objects.append((lineNumber, value))
    }
    return objects
}

/// The string under `key` of a record: a missing key, a chat-format message list and any other kind are errors
/// naming the file, the line and the key.
func jsonlString(_ object: JSONValue, key: String, path: String, line: Int) throws(TrainingError) -> String {
    guard let value = object[key] else { throw .missingDataKey(path: path, line: line, key: key) }
    switch value {
    case .string(let text):
        return text
    case .array(let elements) where elements.first?["role"] != nil:
        throw .invalidDataRecord(
            path: path, line: line,
            reason: "'\(key)' is a list of chat messages; conversational records are not supported: apply the "
                + "chat template and write the prompt and completions as plain strings")
    default:
        throw .invalidDataRecord(path: path, line: line, reason: "'\(key)' must be a string, found \(value.kindName)")
    }
}
