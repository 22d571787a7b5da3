// The fuzzer's entry: picks the target named by `ONNX_DPO_FUZZ_TARGET`, then hands libFuzzer's driver the command
// line (corpus folders, -max_total_time, ...). Built with `-sanitize=fuzzer,address` (see `scripts/fuzz`), which
// links the driver in.
import Foundation
import LibFuzzer

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("onnx-dpo-fuzz: \(message)\n".utf8))
    exit(2)
}

/// The target and its scratch folder, for the C callback below (which cannot capture them).
nonisolated(unsafe) var selected: (target: FuzzTarget, scratch: ScratchFolder)?

let names = fuzzTargets.map(\.name).joined(separator: ", ")
guard let name = ProcessInfo.processInfo.environment["ONNX_DPO_FUZZ_TARGET"] else {
    fail("set ONNX_DPO_FUZZ_TARGET to one of: \(names)")
}
guard let target = fuzzTargets.first(where: { $0.name == name }) else {
    fail("unknown target '\(name)'; the targets are: \(names)")
}
do {
    selected = (target, try ScratchFolder())
} catch {
    fail("cannot make a scratch folder: \(error)")
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    guard let (target, scratch) = selected else { return 0 }
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        try target.run(scratch, bytes)
    } catch {
        // A thrown error is the right answer to a malformed file; only a crash, a sanitizer report, a leak or a
        // timeout is a failure.
    }
    return 0
})
