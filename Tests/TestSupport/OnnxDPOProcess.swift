import Foundation

/// What one run of the `onnx-dpo` binary did.
public struct OnnxDPORun: Sendable {
    /// The exit status (for a killed run, the signal's number).
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
    /// Whether `runOnnxDPO` sent SIGKILL.
    public var killed: Bool
}

/// Marks this module's bundle, the test bundle the executable is built beside.
private final class TestSupportBundle {}

/// The `onnx-dpo` executable built with the tests: `$ONNX_DPO_BIN` when set, else the one beside the test bundle
/// (SwiftPM builds executables with the tests, into the same folder: on Linux the bundle is that folder, on macOS
/// it is a `.xctest` inside it), else nil.
public func onnxDPOExecutable() -> String? {
    if let path = ProcessInfo.processInfo.environment["ONNX_DPO_BIN"], FileManager.default.isExecutableFile(atPath: path) {
        return path
    }
    var folder = Bundle(for: TestSupportBundle.self).bundleURL
    for _ in 0..<3 {
        let candidate = folder.appendingPathComponent("onnx-dpo").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        folder = folder.deletingLastPathComponent()
    }
    return nil
}

/// Runs the built `onnx-dpo` with `arguments` and returns its exit status and output. With `killWhen`, polled
/// every 2 ms while the process runs, the process gets SIGKILL (no chance to clean up) as soon as the condition
/// holds or `killAfter` seconds have passed, whichever is first. Output goes through temporary files, not pipes,
/// so a chatty run cannot block on a full pipe while it is being watched.
public func runOnnxDPO(
    _ arguments: [String], killWhen condition: (() -> Bool)? = nil, killAfter seconds: TimeInterval = 120
) throws -> OnnxDPORun {
    guard let executable = onnxDPOExecutable() else {
        throw CocoaError(.fileNoSuchFile, userInfo: [
            NSLocalizedDescriptionKey: "no onnx-dpo executable beside the test bundle and no $ONNX_DPO_BIN "
                + "(`swift build --build-tests` builds it)",
        ])
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("onnx-dpo-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let outputURL = folder.appendingPathComponent("stdout"), errorURL = folder.appendingPathComponent("stderr")
    FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    FileManager.default.createFile(atPath: errorURL.path, contents: nil)
    let output = try FileHandle(forWritingTo: outputURL), errors = try FileHandle(forWritingTo: errorURL)

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    var killed = false
    if let condition {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && !condition() && Date() < deadline { usleep(2_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            killed = true
        }
    }
    process.waitUntilExit()
    try output.close()
    try errors.close()
    return OnnxDPORun(status: process.terminationStatus,
                      standardOutput: try String(contentsOf: outputURL, encoding: .utf8),
                      standardError: try String(contentsOf: errorURL, encoding: .utf8), killed: killed)
}
