import ArgumentParser
import Foundation
import Interpreter
import RunReports
import Training

/// `onnx-dpo bench <what>`. Each bench command is the same three parts: its own flags (sizes and the count of
/// timed runs) beside the shared `BenchOptions`, one library call inside `bench.report { profile in ... }`, and
/// its result's `BenchResult.line`.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory.",
        subcommands: [Forward.self, TrainStep.self, Checkpointing.self, GenerateTokens.self, GEMM.self])
}

/// The flags every bench command takes.
struct BenchOptions: ParsableArguments {
    @Option(help: "The .onnx model.")
    var model: String

    @Option(help: "Untimed runs first (default: forward 2 passes, train 1 step).")
    var warmup: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Also print the time spent per op type, forward and (train) backward, to standard error.")
    var profile = false

    @Option(help: "Also write the time per op type, forward and backward, as an HTML bar chart to this file.")
    var profileReport: String?

    /// Runs `measure`, handing it an op profile when `--profile` or `--profile-report` asks for one; writes the
    /// profile to standard error (`--profile`) and as a page (`--profile-report`, titled `title`, its batch
    /// described by `shape`) and prints the result: one JSON object with `--json`, its one line of text otherwise.
    func report<Result: BenchResult>(title: String, shape: String, _ measure: (OpProfile?) throws -> Result) throws {
        let opProfile = profile || profileReport != nil ? OpProfile() : nil
        let result = try measure(opProfile)
        if let opProfile, profile { FileHandle.standardError.write(Data((opProfile.table + "\n").utf8)) }
        if let opProfile, let profileReport {
            try ProfileReport(title: title, model: model, shape: shape, profile: opProfile).write(to: profileReport)
        }
        print(json ? try jsonText(result) : result.line)
    }
}

/// What a bench command prints: the result as JSON (`jsonText`) with `--json`, else `line`.
protocol BenchResult: Encodable {
    /// The result in one line of text.
    var line: String { get }
}

extension Bench {
    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time forward passes on generated token inputs: tokens per second and peak memory.")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Sequences per batch.")
        var batch = 4
        @Option(help: "Tokens per sequence.")
        var seq = 128
        @Option(help: "Timed passes (the median is reported).")
        var iterations = 5

        func run() throws {
            try bench.report(title: "bench forward", shape: "\(batch) × \(seq) tokens") { profile in
                try ForwardBenchmark.run(modelPath: bench.model, batch: batch, seq: seq, warmup: bench.warmup ?? 2,
                                         iterations: iterations, profile: profile)
            }
        }
    }

    struct TrainStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Time DPO steps (LoRA r 8 on q and v, AdamW, cached reference): seconds per step, tokens/s, peak memory.")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Preference pairs per step.")
        var pairs = 2
        @Option(help: "Tokens per sequence (half prompt, half completion).")
        var seq = 128
        @Option(help: "Timed steps (the median is reported).")
        var steps = 3
        @Flag(help: "Keep activations only at block boundaries and recompute blocks in the backward pass.")
        var gradientCheckpointing = false
        @Flag(help: "Keep attention's score matrices for the backward pass instead of recomputing them.")
        var keepAttention = false
        @OptionGroup var processes: ProcessOptions

        func run() throws {
            // Under mpirun the processes share each step's pairs; rank 0 prints.
            try processes.run { communicator in
                let measure = { (profile: OpProfile?) in
                    try TrainingBenchmark.run(modelPath: bench.model, pairs: pairs, seq: seq, warmup: bench.warmup ?? 1,
                                              steps: steps, gradientCheckpointing: gradientCheckpointing,
                                              keepAttentionScores: keepAttention, profile: profile,
                                              communicator: communicator)
                }
                if communicator.isRoot {
                    try bench.report(title: "bench train", shape: "\(pairs) pairs × \(seq) tokens", measure)
                } else {
                    _ = try measure(nil)
                }
            }
        }
    }
}

extension ForwardBenchmark.Result: BenchResult {
    var line: String {
        String(format: "%.1f tokens/s  (%.3f s per %d×%d batch, median of %d)  peak memory %.1f MiB  load %.2f s",
               tokensPerSecond, secondsPerRun, batch, seq, iterations, Double(peakMemoryBytes) / 1_048_576, loadSeconds)
    }
}

extension TrainingBenchmark.Result: BenchResult {
    var line: String {
        String(format: "%.3f s per DPO step (%d pairs × %d tokens, median of %d%@%@)  %.1f tokens/s  peak memory %.1f MiB  reference pass %.2f s",
               stepSeconds, pairs, seq, steps, gradientCheckpointing ? ", gradient checkpointing" : "",
               keepAttentionScores ? ", attention kept" : "", tokensPerSecond,
               Double(peakMemoryBytes) / 1_048_576, referenceSeconds)
            + (processes > 1 ? String(format: "  %d processes, gradient allreduce %.2f ms", processes, allreduceSeconds * 1000) : "")
    }
}

extension Bench {
    /// The memory/time trade of what a step keeps for its backward pass: `bench train` keeping everything
    /// (`--keep-attention`), recomputing attention's score matrices (the default), and with gradient checkpointing,
    /// at each length, each in a process of its own (peak memory is a per-process high-water mark), under an address-space limit so that a run
    /// that does not fit fails by itself instead of waking the kernel's OOM killer.
    struct Checkpointing: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "checkpointing",
            abstract: "Time and peak memory of a DPO step keeping everything, recomputing attention, and with --gradient-checkpointing, per sequence length.")

        @Option(help: "The .onnx model.")
        var model: String
        @Option(help: "Preference pairs per step.")
        var pairs = 2
        @Option(help: "Tokens per sequence, comma-separated.")
        var seq = CommaList<Int>([128, 1024, 4096])
        @Option(help: "Address-space limit of each run in GiB (default: 85% of the machine's memory).")
        var memoryLimit: Double?
        @Flag(help: "Print one JSON object.")
        var json = false

        /// What a step keeps for its backward pass.
        enum Mode: String, Encodable, CaseIterable {
            /// `--keep-attention`: every value the gradient rules read, attention's score matrices included.
            case everythingKept = "everything-kept"
            /// The default: attention cores recomputed in the backward pass.
            case attentionRecomputed = "attention-recomputed"
            /// `--gradient-checkpointing`: block inputs only, blocks (and their attention) recomputed.
            case checkpointing

            var flags: [String] {
                switch self {
                case .everythingKept: ["--keep-attention"]
                case .attentionRecomputed: []
                case .checkpointing: ["--gradient-checkpointing"]
                }
            }
        }

        struct Row: Encodable {
            var seq: Int
            var mode: Mode
            /// Nil when the run failed (`failure` says how).
            var stepSeconds: Double?
            var peakMemoryBytes: Int?
            var failure: String?
        }

        func run() throws {
            let limit = memoryLimit ?? Double(ProcessInfo.processInfo.physicalMemory) * 0.85 / 1_073_741_824
            guard limit > 0 else { throw ValidationError("--memory-limit must be positive") }
            var rows: [Row] = []
            for length in seq.values {
                for mode in Mode.allCases {
                    rows.append(try measure(seq: length, mode: mode, limitGiB: limit))
                    if !json {
                        // Unbuffered: each run takes minutes, so show it as it ends, also when stdout is a file.
                        FileHandle.standardOutput.write(Data((Self.line(rows.last!) + "\n").utf8))
                    }
                }
            }
            if json { print(try jsonText(rows)) }
        }

        /// One `bench train` in a child process.
        func measure(seq length: Int, mode: Mode, limitGiB: Double) throws -> Row {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            let arguments = ["bench", "train", "--model", model, "--pairs", "\(pairs)", "--seq", "\(length)", "--steps", "1",
                             "--warmup", "0", "--json"] + mode.flags
            process.arguments = ["-c", "ulimit -v \(Int(limitGiB * 1_048_576)); exec \"$0\" \"$@\"",
                                 CommandLine.arguments[0]] + arguments
            let output = Pipe(), errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile().suffix(300), as: UTF8.self)
            process.waitUntilExit()
            var row = Row(seq: length, mode: mode)
            struct Measured: Decodable { var stepSeconds: Double; var peakMemoryBytes: Int }
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            if process.terminationReason == .exit, process.terminationStatus == 0,
               let measured = try? decoder.decode(Measured.self, from: data) {
                row.stepSeconds = measured.stepSeconds
                row.peakMemoryBytes = measured.peakMemoryBytes
            } else {
                let how = process.terminationReason == .exit ? "exit status \(process.terminationStatus)" : "signal \(process.terminationStatus)"
                row.failure = "failed (\(how); over the \(String(format: "%.1f", limitGiB)) GiB limit?)"
                    + (message.isEmpty ? "" : ": " + message.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last.map(String.init)!)
            }
            return row
        }

        static func line(_ row: Row) -> String {
            let head = String(format: "%5d tokens  %@", row.seq, row.mode.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0))
            guard let seconds = row.stepSeconds, let bytes = row.peakMemoryBytes else { return head + "  " + (row.failure ?? "failed") }
            return head + String(format: "  %.2f s per step  peak memory %.2f GiB", seconds, Double(bytes) / 1_073_741_824)
        }
    }
}
