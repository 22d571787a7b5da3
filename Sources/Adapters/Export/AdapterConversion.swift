import Foundation
import ONNXGraph

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
    /// Converts the adapter folder `adapterPath` for the model at `modelPath` into `target` at `output` (an `.onnx`
    /// file for the ONNX forms, an `.onnx_adapter` file, or a folder for PEFT and MLX). Refuses to write over the
    /// model or the adapter it reads.
    public static func convert(modelPath: String, adapterPath: String, to target: ConversionTarget, output: String) throws -> ConversionReport {
        let model = try Model.load(path: modelPath)
        let (adapter, format) = try AdapterFolder.read(adapterPath, for: model)
        var report = ConversionReport(source: adapterPath, sourceFormat: format, target: target, output: output,
                                      modules: adapter.modules.map(\.modulePath), scale: adapter.configuration.scale)
        for file in [modelPath, adapterPath] where ModelEditor.sameFile(output, file) {
            throw AdapterError.cannotWrite(path: output, reason: "it is the input '\(file)'; write the conversion elsewhere")
        }
        // ONNX targets lock their file in `ONNXExport.write`; the others lock here.
        let lock = target.exportForm == nil ? try OutputLock.file(output) : nil
        defer { lock?.release() }
        switch target {
        case .merged, .loraNodes, .loraInputs:
            report.export = try ONNXExport.write(model: model, adapter: adapter, form: target.exportForm!, to: output,
                                                 adapterSource: adapterPath)
        case .onnxAdapter:
            let parameters = try ONNXExport.adapterParameters(adapter, model: model)
            try ONNXAdapterFile.write(.init(parameters: parameters, adapterVersion: 1, modelVersion: 1), to: output)
        case .peft:
            try adapter.save(to: output, format: .peft, context: AdapterSaveContext(baseModelNameOrPath: modelPath))
        case .mlx:
            let layerCount = try? LoRATargets.find(in: model, kinds: [.q]).map(\.layer).max().map { $0 + 1 }
            try adapter.save(to: output, format: .mlx, context: AdapterSaveContext(layerCount: layerCount))
        }
        return report
    }
}
