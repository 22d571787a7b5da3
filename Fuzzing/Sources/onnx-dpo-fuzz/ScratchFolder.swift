#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A private folder (in /dev/shm when there is one, so writing each input costs no disk I/O) that fuzz inputs are
/// written into, since every reader under test takes a path. It also holds the files inputs may refer to:
/// external data for ONNX models, empty weights files for adapter folders. Removed when the process exits normally.
final class ScratchFolder: Sendable {
    let root: String

    /// External-data files an ONNX input can point at: `weights.bin` (4096 bytes counting 0, 1, ... mod 251),
    /// `nested/more.bin` (64 bytes), and the symlink `outside.bin` to a file outside the folder (must be refused).
    static let externalDataFiles: [(path: String, bytes: [UInt8])] = [
        ("weights.bin", (0..<4096).map { UInt8($0 % 251) }),
        ("nested/more.bin", [UInt8](repeating: 0x3f, count: 64)),
    ]

    /// A safetensors file holding no tensor: the 8-byte header length, then `{}` padded to 8 bytes.
    static let emptySafeTensors: [UInt8] = [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8)

    init() throws {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        root = "\(base)/onnx-dpo-fuzz-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        for (path, bytes) in Self.externalDataFiles { _ = try write(bytes, to: path) }
        try FileManager.default.createSymbolicLink(atPath: self.path("outside.bin"), withDestinationPath: "/etc/hostname")
        _ = try write(Self.emptySafeTensors, to: "peft/adapter_model.safetensors")
        _ = try write(Self.emptySafeTensors, to: "mlx/adapters.safetensors")
        Self.removeAtExit = root
        atexit { if let root = ScratchFolder.removeAtExit { try? FileManager.default.removeItem(atPath: root) } }
    }

    nonisolated(unsafe) private static var removeAtExit: String?

    /// The absolute path of `relative` in the folder.
    func path(_ relative: String) -> String { "\(root)/\(relative)" }

    /// Writes `bytes` to `relative` (replacing it, creating folders), returning its path.
    func write(_ bytes: [UInt8], to relative: String) throws -> String {
        let file = path(relative)
        try FileManager.default.createDirectory(
            atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }
}
