import ArgumentParser
import Foundation
import Finetune
import Interpreter
import ONNXGraph

@main
struct OnnxDPO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx-dpo",
        abstract: "Inspect, run and align language models stored as ONNX files.",
        subcommands: [Inspect.self, Run.self, Train.self, Eval.self, Export.self, Convert.self, Bench.self])
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model: versions, inputs and outputs, ops, parameters, external data, unsupported ops, LoRA targets.")

    @Argument(help: "The .onnx file.")
    var model: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() throws {
        let inspection = ModelInspection(model: try Model.load(path: model))
        print(json ? try jsonText(inspection) : inspection.text)
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model on the arrays of an .npz and write every graph output to another .npz.")

    @Option(help: "The .onnx file.")
    var model: String

    @Option(help: "An .npz whose keys are the model's input names.")
    var inputs: String

    @Option(help: "Where to write the outputs (.npz, keyed by output name).")
    var output: String

    @Option(help: "An adapter folder (PEFT or MLX) to apply unmerged, as LoRA nodes beside the base weights.")
    var adapter: String?

    func run() throws {
        let session: Session
        if let adapter {
            let base = try Model.load(path: model)
            var loaded = try AdapterConversion.readAdapter(at: adapter, for: base).0
            loaded.configuration.dropout = 0  // inference: no dropout masks to feed
            let adapted = try AdaptedModel(model: base, adapter: loaded)
            session = try Session(model: adapted.model, additionalInitializers: adapted.initializers)
        } else {
            session = try Session(model: try Model.load(path: model))
        }
        let written = try NPZRunner.run(session: session, inputsPath: inputs, outputPath: output)
        for (name, tensor) in written {
            print("\(name): \(tensor.dataType)\(tensor.shape)")
        }
        print("wrote \(output)")
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory.", subcommands: [Forward.self, TrainStep.self, GEMM.self])

    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time forward passes on generated token inputs: tokens per second and peak memory.")

        @Option(help: "The .onnx file.")
        var model: String

        @Option(help: "Sequences per batch.")
        var batch = 4

        @Option(help: "Tokens per sequence.")
        var seq = 128

        @Option(help: "Untimed passes first.")
        var warmup = 2

        @Option(help: "Timed passes (the median is reported).")
        var iterations = 5

        @Flag(help: "Print one JSON object.")
        var json = false

        @Flag(help: "Also print the time spent per op type (to standard error).")
        var profile = false

        func run() throws {
            let opProfile = profile ? OpProfile() : nil
            let result = try ForwardBenchmark.run(
                modelPath: model, batch: batch, seq: seq, warmup: warmup, iterations: iterations, profile: opProfile)
            if let opProfile {
                FileHandle.standardError.write(Data((opProfile.table + "\n").utf8))
            }
            if json {
                print(try jsonText(result))
            } else {
                print(String(format: "%.1f tokens/s  (%.3f s per %d×%d batch, median of %d)  peak memory %.1f MiB  load %.2f s",
                             result.tokensPerSecond, result.secondsPerRun, batch, seq, result.iterations,
                             Double(result.peakMemoryBytes) / 1_048_576, result.loadSeconds))
            }
        }
    }
}

extension Bench {
    struct TrainStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Time DPO steps (LoRA r 8 on q and v, AdamW, cached reference): seconds per step, tokens/s, peak memory.")

        @Option(help: "The .onnx model.")
        var model: String
        @Option(help: "Preference pairs per step.")
        var pairs = 2
        @Option(help: "Tokens per sequence (half prompt, half completion).")
        var seq = 128
        @Option(help: "Untimed steps first.")
        var warmup = 1
        @Option(help: "Timed steps (the median is reported).")
        var steps = 3
        @Flag(help: "Print one JSON object.")
        var json = false
        @Flag(help: "Also print the time per op type, forward and backward (to standard error).")
        var profile = false

        func run() throws {
            let opProfile = profile ? OpProfile() : nil
            let result = try TrainingBenchmark.run(modelPath: model, pairs: pairs, seq: seq, warmup: warmup, steps: steps,
                                                   profile: opProfile)
            if let opProfile { FileHandle.standardError.write(Data((opProfile.table + "\n").utf8)) }
            if json {
                print(try jsonText(result))
            } else {
                print(String(format: "%.3f s per DPO step (%d pairs × %d tokens, median of %d)  %.1f tokens/s  peak memory %.1f MiB  reference pass %.2f s",
                             result.stepSeconds, pairs, seq, result.steps, result.tokensPerSecond,
                             Double(result.peakMemoryBytes) / 1_048_576, result.referenceSeconds))
            }
        }
    }
}

/// JSON with snake_case keys (`tokens_per_second`), the convention of every `--json` output.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
