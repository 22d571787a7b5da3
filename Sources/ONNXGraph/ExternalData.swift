#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The external data files of one model: resolves `location`s safely and keeps each file mapped once.
public final class ExternalDataStore: @unchecked Sendable {
    /// The folder holding the model, with symlinks resolved.
    public let directory: String
    private var files: [String: MappedFile] = [:]
    private let lock = NSLock()

    public init(directory: String) {
        self.directory = ExternalDataStore.realPath(directory) ?? directory
    }

    /// The bytes of `reference`, for tensor `name`, after checking that the file lies inside the model's folder
    /// (no absolute path, no `..`, no symlink pointing out: the CVE-2024-27318 class of bug) and is long enough.
    public func bytes(of reference: ExternalDataReference, tensor name: String) throws(GraphError) -> UnsafeRawBufferPointer {
        let file = try mappedFile(reference.location, tensor: name)
        let available = file.bytes.count - reference.offset
        guard reference.offset >= 0, available >= 0 else {
            throw .externalDataUnavailable(tensor: name, location: reference.location,
                reason: "is \(file.bytes.count) bytes, shorter than the offset \(reference.offset)")
        }
        let length = reference.length ?? available
        guard length >= 0, length <= available else {
            throw .externalDataUnavailable(tensor: name, location: reference.location,
                reason: "is \(file.bytes.count) bytes, too short for \(length) bytes at offset \(reference.offset)")
        }
        return UnsafeRawBufferPointer(rebasing: file.bytes[reference.offset..<(reference.offset + length)])
    }

    /// Tells the kernel that the pages holding `reference` will not be read again soon, so they stop counting
    /// in the process's resident memory once their values were copied out (they are re-read from the file if
    /// needed). Without this a model's weights are resident twice while a session loads: mapped and decoded.
    public func discardPages(of reference: ExternalDataReference) {
        lock.lock()
        let file = files[reference.location]
        lock.unlock()
        guard let file, let base = file.bytes.baseAddress else { return }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (reference.offset + pageSize - 1) / pageSize * pageSize
        let end = min(reference.offset + (reference.length ?? file.bytes.count - reference.offset), file.bytes.count)
            / pageSize * pageSize
        guard end > start else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    /// The resolved path of `location`, refused unless it is inside the model's folder.
    public func resolve(_ location: String, tensor name: String) throws(GraphError) -> String {
        let components = location.split(separator: "/", omittingEmptySubsequences: false)
        guard !location.isEmpty, !location.hasPrefix("/"), !location.hasPrefix("\\"), !location.contains(":"),
              !components.contains("..") else {
            throw .externalDataOutsideModelFolder(tensor: name, location: location)
        }
        let joined = directory + "/" + location
        guard let resolved = Self.realPath(joined) else {
            throw .externalDataUnavailable(tensor: name, location: location,
                reason: "cannot be opened (\(String(cString: strerror(errno)))); expected at \(joined)")
        }
        guard resolved.hasPrefix(directory + "/") else {
            // A symlink inside the folder that points out of it.
            throw .externalDataOutsideModelFolder(tensor: name, location: location)
        }
        return resolved
    }

    private func mappedFile(_ location: String, tensor name: String) throws(GraphError) -> MappedFile {
        lock.lock()
        defer { lock.unlock() }
        if let file = files[location] { return file }
        let path = try resolve(location, tensor: name)
        let file: MappedFile
        do {
            file = try MappedFile(path: path)
        } catch {
            throw .externalDataUnavailable(tensor: name, location: location, reason: "cannot be read: \(error)")
        }
        files[location] = file
        return file
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
