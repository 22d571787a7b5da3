import Foundation
import ONNXGraph

/// The adapter folder formats read and written here.
public enum AdapterFormat: String, Sendable, CaseIterable, Codable {
    /// PEFT's `adapter_model.safetensors` + `adapter_config.json` (TRL, PEFT, and this project's `train`).
    case peft
    /// mlx-lm's `adapters.safetensors` + `adapter_config.json`.
    case mlx

    /// The format of the adapter folder `directory`, told by the weights file it holds.
    public static func detect(_ directory: String) throws -> AdapterFormat {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AdapterError.adapterNotFound(path: directory)
        }
        if FileManager.default.fileExists(atPath: "\(directory)/\(PEFTAdapter.weightsFileName)") { return .peft }
        if FileManager.default.fileExists(atPath: "\(directory)/\(MLXAdapter.weightsFileName)") { return .mlx }
        throw AdapterError.invalidAdapter(path: directory, reason:
            "holds neither \(PEFTAdapter.weightsFileName) (PEFT) nor \(MLXAdapter.weightsFileName) (MLX)")
    }
}

/// What `onnx-dpo convert` can write.
public enum ConversionTarget: String, Sendable, CaseIterable, Codable {
    case merged
    case loraNodes = "lora-nodes"
    case loraInputs = "lora-inputs"
    /// Only the `.onnx_adapter` file, for a model exported once with `lora-inputs`.
    case onnxAdapter = "onnx-adapter"
    case peft
    case mlx

    var exportForm: ONNXExportForm? {
        switch self {
        case .merged: .merged
        case .loraNodes: .loraNodes
        case .loraInputs: .loraInputs
        case .onnxAdapter, .peft, .mlx: nil
        }
    }
}

/// What `AdapterConversion.convert` wrote.
public struct ConversionReport: Sendable, Encodable {
    public var source: String
    public var sourceFormat: AdapterFormat
    public var target: ConversionTarget
    public var output: String
    public var modules: [String]
    public var scale: Double
    /// Set when the target is an ONNX model.
    public var export: ONNXExportReport?
}

/// Applies an adapter trained anywhere (PEFT/TRL on the Hugging Face model, mlx-lm, or `onnx-dpo train`) to an
/// ONNX export of its base model, or rewrites it in another runtime's adapter format.
public enum AdapterConversion {
    /// Reads the adapter folder `directory` (PEFT or MLX, detected) for `model`: its module paths are looked up
    /// among the graph's projections (see `LoRAAdapter.load(from:for:)`).
    public static func readAdapter(at directory: String, for model: Model) throws -> (LoRAAdapter, AdapterFormat) {
        let format = try AdapterFormat.detect(directory)
        switch format {
        case .peft:
            return (try LoRAAdapter.load(from: directory, for: model), format)
        case .mlx:
            let weightsPath = "\(directory)/\(MLXAdapter.weightsFileName)"
            let paths = try AdapterFolder.modulePaths(weightsPath: weightsPath, modulePath: { key in
                [MLXAdapter.aSuffix, MLXAdapter.bSuffix].first(where: { key.hasSuffix($0) }).map { String(key.dropLast($0.count)) }
            }, notLoRA: { "'\($0)' is not a LoRA weight (<module path>.lora_a or .lora_b)" })
            let modules = try LoRAModule.modules(atPaths: paths, in: model, weightsPath: weightsPath)
            return (try LoRAAdapter.loadMLX(from: directory, modules: modules), format)
        }
    }

    /// Converts the adapter folder `adapterPath` for the model at `modelPath` into `target` at `output` (an `.onnx`
    /// file for the ONNX forms, an `.onnx_adapter` file, or a folder for PEFT and MLX). Refuses to write over the
    /// model or the adapter it reads.
    public static func convert(modelPath: String, adapterPath: String, to target: ConversionTarget, output: String) throws -> ConversionReport {
        let model = try Model.load(path: modelPath)
        let (adapter, format) = try readAdapter(at: adapterPath, for: model)
        var report = ConversionReport(source: adapterPath, sourceFormat: format, target: target, output: output,
                                      modules: adapter.modules.map(\.modulePath), scale: adapter.configuration.scale)
        for file in [modelPath, adapterPath] where ModelEditor.sameFile(output, file) {
            throw AdapterError.cannotWrite(path: output, reason: "it is the input '\(file)'; write the conversion elsewhere")
        }
        switch target {
        case .merged, .loraNodes, .loraInputs:
            report.export = try ONNXExport.write(model: model, adapter: adapter, form: target.exportForm!, to: output,
                                                 adapterSource: adapterPath)
        case .onnxAdapter:
            let parameters = try ONNXExport.adapterParameters(adapter, model: model)
            try ONNXAdapterFile.write(.init(parameters: parameters, adapterVersion: 1, modelVersion: 1), to: output)
        case .peft:
            try adapter.save(to: output, baseModelNameOrPath: modelPath)
        case .mlx:
            try adapter.saveMLX(to: output, layerCount: try? LoRATargets.find(in: model, kinds: [.q]).map(\.layer).max().map { $0 + 1 })
        }
        return report
    }
}
