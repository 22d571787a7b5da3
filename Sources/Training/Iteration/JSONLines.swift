#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ONNXGraph

/// JSONL files of the iterative loop (prompts, samples, judged pairs): read with errors naming the file and the
/// line, written so that a kill never leaves a cut line where a reader would take it for a whole one.
public enum JSONLines {
    /// Each non-blank line of `path` decoded as `T`, with its 1-based line number. A line that is not JSON, or
    /// lacks a key `T` needs, or holds a value of the wrong kind, is `TrainingError.invalidDataRecord` naming the
    /// line and the key; a file without records is `TrainingError.emptyDataset`.
    public static func read<T: Decodable>(_ type: T.Type, from path: String) throws(TrainingError) -> [(line: Int, value: T)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .emptyDataset(path: path, reason: FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file")
        }
        var records: [(Int, T)] = []
        for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            guard line.contains(where: { !Set<UInt8>([0x20, 0x09, 0x0D]).contains($0) }) else { continue }
            do {
                records.append((index + 1, try JSONDecoder().decode(T.self, from: Data(line))))
            } catch {
                throw .invalidDataRecord(path: path, line: index + 1, reason: describe(error))
            }
        }
        guard !records.isEmpty else { throw .emptyDataset(path: path, reason: "the file has no records") }
        return records
    }

    /// A decoding error in a user's words: which key, and what was wrong with it.
    static func describe(_ error: any Error) -> String {
        func key(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingPrefix(".").description
        }
        switch error {
        case DecodingError.keyNotFound(let missing, let context):
            let parent = key(context.codingPath)
            return "missing key '\(parent.isEmpty ? missing.stringValue : parent + "." + missing.stringValue)'"
        case DecodingError.typeMismatch(let type, let context), DecodingError.valueNotFound(let type, let context):
            return context.codingPath.isEmpty ? "expected a JSON object"
                : "'\(key(context.codingPath))' must be \(describe(type))"
        case DecodingError.dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "'\(key(context.codingPath))': \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Double.Type, is Int.Type: "a number"
        case is Bool.Type: "true or false"
        case is [String].Type: "a list of strings"
        default: "a value of type \(type)"
        }
    }
}

/// A JSONL file written one record at a time, resumably: records go to `<path>.partial`, each line with one
/// write(2), and `finish()` flushes it and renames it to `path`. Reopening a `.partial` left by a killed run keeps
/// its whole lines (a line cut by the kill is dropped), so work already done is not done again.
public final class PartialJSONLines {
    public let path: String
    public var partialPath: String { path + ".partial" }
    /// The whole lines already in the `.partial` file when it was opened (none without `resume`).
    public let resumedLines: [Data]
    private let handle: FileHandle
    private let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// Opens `<path>.partial`: with `resume`, keeping the whole lines it has; otherwise empty.
    public init(path: String, resume: Bool) throws {
        self.path = path
        let partial = path + ".partial"
        var kept = Data()
        var lines: [Data] = []
        if resume, let existing = FileManager.default.contents(atPath: partial), let end = existing.lastIndex(of: 0x0A) {
            kept = existing[...end]
            lines = kept.split(separator: 0x0A).map { Data($0) }
        }
        do {
            try AtomicFile.write(kept, to: partial)
        } catch {
            throw TrainingError.cannotWrite(path: partial, reason: "\(error)")
        }
        resumedLines = lines
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: partial))
        try handle.seekToEnd()
    }

    /// Appends `record` as one line (keys sorted).
    public func append<T: Encodable>(_ record: T) throws {
        var data = try encoder.encode(record)
        data.append(0x0A)
        do {
            try handle.write(contentsOf: data)
        } catch {
            throw TrainingError.cannotWrite(path: partialPath, reason: "\(error.localizedDescription)")
        }
    }

    /// Flushes the file to disk and renames it to `path`.
    public func finish() throws {
        try handle.synchronize()
        try handle.close()
        guard rename(partialPath, path) == 0 else {
            throw TrainingError.cannotWrite(path: path, reason: "renaming '\(partialPath)' failed: \(String(cString: strerror(errno)))")
        }
    }
}
