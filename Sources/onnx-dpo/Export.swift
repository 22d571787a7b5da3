import ArgumentParser
import Adapters
import Training
import Foundation
import ONNXGraph

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model with an adapter applied into the model's own graph: merged weights, or LoRA kept as nodes.",
        discussion: """
            --form merged       W + scale·ΔW written into each adapted weight (same nodes, names, opsets, metadata, \
            external-data layout; float16/bfloat16 weights merged in float32 and rounded once; MatMulNBits int4/int8 \
            weights dequantised, merged in float32 and re-quantised with the same bits, block size and zero points, \
            the re-quantisation error printed).
            An onnxruntime-genai folder's genai_config.json and tokenizer files are carried beside --output.
            --form lora-nodes   LoRA kept as nodes after each projection; A, B and the scale as initializers.
            --form lora-inputs  LoRA nodes reading <module>.lora_A [in, lora_rank] and <module>.lora_B [lora_rank, out] \
            graph inputs, with the adapter (scale folded into B) in an onnxruntime .onnx_adapter file.
            Without --adapter the model is rewritten unchanged (every tensor bit for bit), with the provenance entry.
            """)

    @Option(help: "The .onnx base model.")
    var model: String

    @Option(help: "The adapter folder (PEFT, from `onnx-dpo train` or TRL/PEFT; or MLX).")
    var adapter: String?

    @Option(help: "The .onnx file to write (its external data, if the input has some, goes to <output>.data).")
    var output: String

    @Option(help: "merged, lora-nodes or lora-inputs.")
    var form: ONNXExportForm = .merged

    @Option(help: "Where --form lora-inputs writes the .onnx_adapter file (default: beside --output).")
    var adapterFile: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let (base, loaded) = try Model.load(path: model, adapterPath: adapter)
        let report = try ONNXExport.write(model: base, adapter: loaded, form: form, to: output, adapterFile: adapterFile,
                                          adapterSource: adapter)
        if json {
            print(try jsonText(report))
        } else {
            printExport(report)
        }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply an adapter trained elsewhere (PEFT/TRL on the Hugging Face model, or MLX) to the ONNX export of its base, or rewrite it in another runtime's format.",
        discussion: """
            The adapter's module paths are found among the graph's projections (from node names, node metadata and \
            the graph's structure); rsLoRA and fused projections (c_attn, qkv_proj, query_key_value) are handled.
            --to merged | lora-nodes | lora-inputs   an .onnx model, as `onnx-dpo export --form`
            --to onnx-adapter                        an onnxruntime .onnx_adapter file for a lora-inputs export
            --to peft | mlx                          an adapter folder (PEFT safetensors, or mlx-lm's adapters.safetensors)
            """)

    @Option(help: "The .onnx export of the adapter's base model.")
    var model: String

    @Option(help: "The adapter folder (PEFT or MLX, detected).")
    var adapter: String

    @Option(help: "merged, lora-nodes, lora-inputs, onnx-adapter, peft or mlx.")
    var to: ConversionTarget

    @Option(help: "The file (or, for peft and mlx, the folder) to write.")
    var output: String

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let report = try AdapterConversion.convert(modelPath: model, adapterPath: adapter, to: to, output: output)
        if json {
            print(try jsonText(report))
            return
        }
        print("\(report.sourceFormat.rawValue) adapter \(report.source): \(report.modules.count) modules, scale \(report.scale)")
        if let export = report.export {
            printExport(export)
        } else {
            print("wrote \(report.output) (\(report.target.rawValue))")
        }
    }
}

func printExport(_ report: ONNXExportReport) {
    print("\(report.form.rawValue): \(report.modules.count) adapted modules")
    if !report.mergedWeights.isEmpty { print("  merged in place: \(report.mergedWeights.count) weights") }
    for copy in report.copiedWeights { print("  shared weight, merged into a copy: \(copy)") }
    for weight in report.requantized {
        print("  re-quantised \(weight.weight) (\(weight.bits)-bit, block \(weight.blockSize), "
              + "\(weight.symmetric ? "symmetric" : "zero points"), \(weight.outputFeatures) output features): "
              + "error / scale max \(String(format: "%.3f", weight.error.maximum)), RMS \(String(format: "%.3f", weight.error.rms))")
    }
    print("wrote \(report.output)" + (report.dataFile.map { " and \($0)" } ?? ""))
    for file in report.carriedFiles { print("carried \(file)") }
    if let adapterFile = report.adapterFile { print("wrote \(adapterFile)") }
    print("ONNX 1.12 checker: \(report.checker)")
}
