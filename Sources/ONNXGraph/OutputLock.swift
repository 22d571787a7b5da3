#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// One writer per output: a process that writes into a folder (a training run's `--output-dir`) or a file (an
/// export) holds an exclusive `flock(2)` on a lock file beside it for as long as it writes, so a second run on the
/// same output is refused at once instead of interleaving checkpoints and metrics. The kernel releases the lock
/// when its holder dies, even by SIGKILL, so a stale lock file (its owner's pid still inside) is taken over and
/// said so; it is removed when the holder releases it.
public final class OutputLock {
    /// The lock file.
    public let path: String
    /// The pid a stale lock file named (its process is gone), when this lock took it over.
    public let takenOverFrom: Int32?
    private var descriptor: Int32

    /// Locks the folder `folder` (created if needed): the lock file is `<folder>/.onnx-dpo.lock`.
    public static func folder(_ folder: String) throws(GraphError) -> OutputLock {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw .cannotWrite(path: folder, reason: "cannot create the folder: \(error.localizedDescription)")
        }
        return try OutputLock(lockFile: (folder as NSString).appendingPathComponent(".onnx-dpo.lock"), output: folder)
    }

    /// Locks the file `file` (which need not exist yet): the lock file is `.<name>.onnx-dpo.lock` beside it.
    public static func file(_ file: String) throws(GraphError) -> OutputLock {
        let url = URL(fileURLWithPath: file)
        let folder = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .cannotWrite(path: file, reason: "the folder '\(folder)' does not exist")
        }
        let lockFile = (folder as NSString).appendingPathComponent(".\(url.lastPathComponent).onnx-dpo.lock")
        return try OutputLock(lockFile: lockFile, output: file)
    }

    private init(lockFile: String, output: String) throws(GraphError) {
        path = lockFile
        while true {
            let descriptor = open(lockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw .cannotWrite(path: output, reason: "cannot create the lock file '\(lockFile)': \(String(cString: strerror(errno)))")
            }
            let owner = Self.ownerPID(descriptor)
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                let reason = errno == EWOULDBLOCK
                    ? "another onnx-dpo process\(owner.map { " (pid \($0))" } ?? "") is writing it; wait for it to finish or stop it"
                    : "cannot lock '\(lockFile)': \(String(cString: strerror(errno)))"
                close(descriptor)
                throw .cannotWrite(path: output, reason: reason)
            }
            // The holder we waited on may have removed the file after we opened it: then the lock is on a file no
            // longer at `lockFile`, so start again on the one there now.
            var held = stat(), named = stat()
            guard fstat(descriptor, &held) == 0, stat(lockFile, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev else {
                close(descriptor)
                continue
            }
            self.descriptor = descriptor
            takenOverFrom = owner.flatMap { $0 == getpid() ? nil : $0 }
            break
        }
        let record = "\(getpid())\n"
        ftruncate(descriptor, 0)
        _ = record.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    /// The pid recorded in an existing lock file.
    private static func ownerPID(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        return Int32(String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Removes the lock file and releases the lock (also done when the lock is deallocated).
    public func release() {
        guard descriptor >= 0 else { return }
        unlink(path)
        flock(descriptor, LOCK_UN)
        close(descriptor)
        descriptor = -1
    }

    deinit { release() }
}
