import ArgumentParser
import Foundation
import Training
import Interpreter
import ONNXGraph
import RunReports

@main
struct OnnxDPO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx-dpo",
        abstract: "Inspect, run and align language models stored as ONNX files.",
        subcommands: [Inspect.self, Run.self, Train.self, Eval.self, Export.self, Convert.self, Generate.self,
                      ChatTemplateCommand.self, Sample.self, Judge.self, Iterate.self, Bench.self, Report.self])

    /// ArgumentParser's `main`, with library errors that name an option by its library name re-worded to name
    /// its flag (`namingFlags`).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: namingFlags(error))
        }
    }
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
        let written = try NPZRunner.run(modelPath: model, adapterPath: adapter, inputsPath: inputs, outputPath: output)
        for (name, tensor) in written {
            print("\(name): \(tensor.dataType)\(tensor.shape)")
        }
        print("wrote \(output)")
    }
}

/// JSON with snake_case keys (`tokens_per_second`), the convention of every `--json` output.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
