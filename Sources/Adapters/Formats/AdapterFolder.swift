import Foundation
import ONNXGraph

/// What PEFT's and MLX's adapter folders have in common: a safetensors file of weights and a JSON configuration,
/// read with each missing piece named, and written (each file atomically) into a folder created if needed.
public enum AdapterFolder {
    static func write(
        _ directory: String, weights: [(name: String, tensor: Tensor)], metadata: [String: String], weightsFileName: String,
        configuration: String, configurationFileName: String
    ) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw AdapterError.cannotWrite(path: directory, reason: "it is a file, not a folder")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AdapterError.cannotWrite(path: directory, reason: "cannot create the folder: \(error.localizedDescription)")
        }
        try SafeTensors.write(weights, metadata: metadata, to: "\(directory)/\(weightsFileName)")
        try AtomicFile.write(Data(configuration.utf8), to: "\(directory)/\(configurationFileName)")
    }
}

extension LoRAModule {
    /// The modules of `model` at `paths` (read from an adapter's keys, `weightsPath` naming it in errors): the
    /// graph's projections with exactly those module paths, found by structure and labelled from node names or
    /// `pkg.torch.onnx.name_scopes`. Every path must be found; a fused projection is adapted on all its output
    /// features.
    static func modules(atPaths paths: [String], in model: Model, weightsPath: String) throws -> [LoRAModule] {
        guard !paths.isEmpty else { throw AdapterError.invalidAdapter(path: weightsPath, reason: "it holds no LoRA weights") }
        let targets = try LoRATargets.find(in: model, matching: paths).filter { paths.contains($0.modulePath) }
        let found = Set(targets.map(\.modulePath))
        if let missing = paths.first(where: { !found.contains($0) }) {
            var available: [String] = []
            for target in try LoRATargets.find(in: model, kinds: Set(LoRATarget.Kind.allCases)) where !available.contains(target.modulePath) {
                available.append(target.modulePath)
            }
            throw AdapterError.adapterModuleMismatch(path: weightsPath, module: missing, reason:
                "is in the adapter but the model has no projection with that module path; its projections are "
                + available.prefix(16).joined(separator: ", ") + (available.count > 16 ? ", …" : ""))
        }
        return try LoRAModule.modules(for: targets, model: model)
    }
}
