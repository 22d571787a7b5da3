#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Every file onnx-dpo writes goes through here: written to a temporary name beside the destination, flushed to
/// disk, then renamed over it, so a crash, a full disk or a kill leaves either the old file or the new one, never
/// half of one. The temporary name is hidden (`.<name>.<token>.tmp`) and removed on failure.
public enum AtomicFile {
    /// Writes `data` to `path` atomically. Refuses a `path` that is a folder or another non-regular file, and a
    /// folder that does not exist.
    public static func write(_ data: Data, to path: String) throws(GraphError) {
        try write(to: path) { (temporary) throws(GraphError) in
            let file = try OutputFile(path: temporary, reportedPath: path)
            defer { file.closeQuietly() }
            let result = data.withUnsafeBytes { bytes in Result { () throws(GraphError) in try file.write(bytes) } }
            try result.get()
            try file.finish()
        }
    }

    /// Lets `body` write the whole file at the temporary path it is given (with any writer: a zip archive, a C
    /// library), then flushes it and renames it over `path`. The temporary file is removed if anything fails.
    public static func write(to path: String, _ body: (_ temporaryPath: String) throws(GraphError) -> Void) throws(GraphError) {
        func fail(_ reason: String) -> GraphError { .cannotWrite(path: path, reason: reason) }
        let folder = try checkDestination(path)
        let temporary = temporaryPath(folder: folder, fileName: URL(fileURLWithPath: path).lastPathComponent,
                                      token: UUID().uuidString)
        do throws(GraphError) {
            try body(temporary)
            let descriptor = open(temporary, O_RDONLY)
            guard descriptor >= 0 else { throw fail("cannot reopen '\(temporary)': \(String(cString: strerror(errno)))") }
            let synced = fsync(descriptor) == 0
            close(descriptor)
            guard synced else { throw fail("fsync of '\(temporary)' failed: \(String(cString: strerror(errno)))") }
            guard rename(temporary, path) == 0 else {
                throw fail("renaming '\(temporary)' failed: \(String(cString: strerror(errno)))")
            }
            syncFolder(folder)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Moves the finished folder `temporary` to `path`. A folder already at `path` is first renamed aside and
    /// removed only after the new one is in place, so a kill at any moment leaves a complete folder at `path` or
    /// (before the first one) none, never a partial one; only rename(2) touches `path`.
    public static func replaceFolder(at path: String, with temporary: String) throws(GraphError) {
        func fail(_ reason: String) -> GraphError { .cannotWrite(path: path, reason: reason) }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let aside = temporaryPath(folder: folder, fileName: URL(fileURLWithPath: path).lastPathComponent + ".old",
                                  token: UUID().uuidString)
        var status = stat()
        let existed = lstat(path, &status) == 0
        if existed, rename(path, aside) != 0 {
            throw fail("moving the old folder aside failed: \(String(cString: strerror(errno)))")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            if existed { rename(aside, path) }
            throw fail("renaming '\(temporary)' failed: \(reason)")
        }
        syncFolder(folder)
        if existed { try? FileManager.default.removeItem(atPath: aside) }
    }

    /// The folder of `path`, after checking that it exists and that `path` is not a folder or a special file.
    @discardableResult
    public static func checkDestination(_ path: String) throws(GraphError) -> String {
        func fail(_ reason: String) -> GraphError { .cannotWrite(path: path, reason: reason) }
        var status = stat()
        if lstat(path, &status) == 0 {
            let type = status.st_mode & S_IFMT
            if type == S_IFDIR { throw fail("it is a folder") }
            if type != S_IFREG && type != S_IFLNK { throw fail("it exists and is not a regular file") }
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw fail("the folder '\(folder)' does not exist")
        }
        return folder
    }

    /// The hidden temporary name a file `fileName` in `folder` is written under before its rename.
    static func temporaryPath(folder: String, fileName: String, token: String) -> String {
        "\(folder)/.\(fileName).\(token).tmp"
    }

    /// Flushes a folder's entries (the renames just made) to disk; best effort.
    static func syncFolder(_ folder: String) {
        let descriptor = open(folder, O_RDONLY)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }
}

/// A file written sequentially with `write(2)`, errors (a full disk: ENOSPC, a file-size limit: EFBIG) reported
/// against the path the user asked for.
final class OutputFile {
    private let descriptor: Int32
    private let temporaryPath: String
    private let reportedPath: String
    private(set) var offset = 0
    private var isClosed = false

    init(path: String, reportedPath: String) throws(GraphError) {
        temporaryPath = path
        self.reportedPath = reportedPath
        descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard descriptor >= 0 else {
            throw .cannotWrite(path: reportedPath, reason: "cannot create '\(path)': \(String(cString: strerror(errno)))")
        }
    }

    private func failure(_ action: String) -> GraphError {
        .cannotWrite(path: reportedPath, reason: "\(action) '\(temporaryPath)' failed: \(String(cString: strerror(errno)))")
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(GraphError) {
        var done = 0
        while done < bytes.count {
            #if canImport(Glibc)
            let count = Glibc.write(descriptor, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
            #else
            let count = Darwin.write(descriptor, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
            #endif
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("writing")
            }
            done += count
        }
        offset += bytes.count
    }

    func write(_ array: [UInt8]) throws(GraphError) {
        let result = array.withUnsafeBytes { bytes in Result { () throws(GraphError) in try write(bytes) } }
        try result.get()
    }

    /// Pads with zeros to a multiple of `alignment`; returns the new offset.
    func align(to alignment: Int) throws(GraphError) -> Int {
        let padding = (alignment - offset % alignment) % alignment
        if padding > 0 {
            try write([UInt8](repeating: 0, count: padding))
        }
        return offset
    }

    /// Flushes to disk and closes.
    func finish() throws(GraphError) {
        guard fsync(descriptor) == 0 else { throw failure("flushing") }
        isClosed = true
        guard close(descriptor) == 0 else { throw failure("closing") }
    }

    func closeQuietly() {
        if !isClosed { close(descriptor) }
        isClosed = true
    }
}
