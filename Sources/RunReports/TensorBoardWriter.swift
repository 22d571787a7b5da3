import Foundation

/// Writes TensorBoard event files: TFRecord-framed `Event` protobufs (tensorboard/compat/proto/event.proto and
/// summary.proto), the first carrying `file_version` "brain.Event:2", then scalar summaries (`simple_value`,
/// float32) and text summaries (the text plugin's string tensor). Each record is written straight to the file, so a
/// run that is killed leaves every finished step readable.
public final class TensorBoardWriter {
    /// The `file_version` TensorBoard expects in the first event of a file.
    public static let fileVersion = "brain.Event:2"
    static let filePrefix = "events.out.tfevents."

    /// The event file this writer appends to.
    public let path: String
    private let handle: FileHandle

    /// Opens a new event file in `folder` (created if missing). Event files already there are from earlier
    /// sessions of the same run: with `keepingStepsThrough` 0 (a fresh run) they are removed; with a step `k` (a run
    /// resumed from its checkpoint at `k`) their events after `k` are dropped, as `metrics.jsonl` drops its lines,
    /// and the new file starts with a `SessionLog` START at `k + 1` (TensorBoard's own restart marker, on which its
    /// `EventAccumulator` purges later steps it had already loaded).
    public init(folder: String, keepingStepsThrough step: Int, now: Date = Date()) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let existing = try Self.eventFiles(in: folder)
        for file in existing {
            if step == 0 { try manager.removeItem(atPath: file) } else { try Self.dropEvents(in: file, after: step) }
        }
        // TensorBoard reads a folder's files in name order, and the name starts with the time: later sessions sort later.
        let newest = existing.compactMap { Int(($0 as NSString).lastPathComponent.dropFirst(Self.filePrefix.count).prefix(10)) }.max() ?? 0
        let seconds = max(Int(now.timeIntervalSince1970), newest + 1)
        let name = String(format: "%@%010d.%@.%d.0", Self.filePrefix, seconds, ProcessInfo.processInfo.hostName,
                          ProcessInfo.processInfo.processIdentifier)
        path = (folder as NSString).appendingPathComponent(name)
        guard manager.createFile(atPath: path, contents: nil) else {
            throw RunReportError.cannotWrite(path: path, reason: "could not create the event file")
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try write(step: 0, wallTime: now) { $0.string(3, Self.fileVersion) }
        if step > 0 {
            // SessionLog { status = START (1) } at field 7 of Event.
            try write(step: step + 1, wallTime: now) { $0.message(7) { $0.int(1, 1) } }
        }
    }

    deinit { try? handle.close() }

    /// One `Event` with a `Summary` of scalar values (`Summary.Value { tag = 1, simple_value = 2 }`) at `step`.
    public func addScalars(_ values: [(tag: String, value: Double)], step: Int, wallTime: Date = Date()) throws {
        try write(step: step, wallTime: wallTime) { event in
            event.message(5) { summary in
                for (tag, value) in values {
                    summary.message(1) { $0.string(1, tag); $0.float(2, Float(value)) }
                }
            }
        }
    }

    /// A text summary (markdown, shown by TensorBoard's text plugin): `Summary.Value { tag = 1, tensor = 8 { dtype
    /// DT_STRING = 7, tensor_shape = 2 (a scalar), string_val = 8 }, metadata = 9 { plugin_data = 1 { plugin_name
    /// = 1: "text" } } }`, as the text plugin's `text_pb` writes it.
    public func addText(tag: String, markdown: String, step: Int, wallTime: Date = Date()) throws {
        try write(step: step, wallTime: wallTime) { event in
            event.message(5) { summary in
                summary.message(1) { value in
                    value.string(1, tag)
                    value.message(8) { tensor in
                        tensor.int(1, 7)
                        tensor.message(2) { _ in }
                        tensor.string(8, markdown)
                    }
                    value.message(9) { metadata in metadata.message(1) { $0.string(1, "text") } }
                }
            }
        }
    }

    /// `Event { wall_time = 1 (seconds), step = 2, <what> }`; a zero step is left out, as proto3 leaves defaults out.
    private func write(step: Int, wallTime: Date, _ what: (inout ProtobufWriter) -> Void) throws {
        var event = ProtobufWriter()
        event.double(1, wallTime.timeIntervalSince1970)
        if step != 0 { event.int(2, Int64(step)) }
        what(&event)
        try handle.write(contentsOf: TFRecord.frame(event.data))
    }

    /// The TensorBoard tag of a `metrics.jsonl` key, as transformers' `TensorBoardCallback` names it
    /// (`rewrite_logs`: `eval_loss` -> `eval/loss`, `loss` -> `train/loss`); nil for `step`, which is the x axis.
    public static func tag(forMetric key: String) -> String? {
        if key == "step" { return nil }
        return key.hasPrefix("eval_") ? "eval/" + key.dropFirst("eval_".count) : "train/" + key
    }

    // MARK: - Reading back

    /// One event as read back: its time, step, and the protobuf bytes.
    public struct Event: Sendable {
        public var wallTime: Double
        public var step: Int
        public var data: Data
    }

    /// The event files in `folder`, in the order TensorBoard reads them (by name).
    public static func eventFiles(in folder: String) throws -> [String] {
        guard FileManager.default.fileExists(atPath: folder) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasPrefix(filePrefix) }.sorted()
            .map { (folder as NSString).appendingPathComponent($0) }
    }

    /// The intact events of one file (a record cut short by a kill ends the list).
    public static func events(inFile path: String) throws -> [Event] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return TFRecord.records(in: data).compactMap { record in
            guard let fields = ProtobufFields(record) else { return nil }
            return Event(wallTime: Double(bitPattern: fields.fixed64[1] ?? 0),
                         step: Int(Int64(bitPattern: fields.varints[2] ?? 0)), data: record)
        }
    }

    /// Rewrites `file` without its events after `step` (and without a torn last record), by a temporary file
    /// renamed over it; a file with nothing to drop is left as it is.
    private static func dropEvents(in file: String, after step: Int) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        let records = TFRecord.records(in: data)
        let kept = records.filter { record in
            guard let fields = ProtobufFields(record) else { return true }
            return Int64(bitPattern: fields.varints[2] ?? 0) <= Int64(step)
        }
        let rewritten = kept.reduce(into: Data()) { $0.append(TFRecord.frame($1)) }
        guard rewritten != data else { return }
        let temporary = ((file as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent(".\((file as NSString).lastPathComponent).tmp")
        try rewritten.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, file) == 0 else {
            throw RunReportError.cannotWrite(path: file, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
    }
}
