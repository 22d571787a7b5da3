import Foundation
import ONNXGraph

/// What PEFT's and MLX's adapter folders have in common: a safetensors file of weights and a JSON configuration,
/// read with each missing piece named, and written (each file atomically) into a folder created if needed.
enum AdapterFolder {
    struct Contents {
        var configurationPath: String
        var configuration: Data
        var weightsPath: String
        var weights: SafeTensors.File
    }

    static func read(_ directory: String, configurationFileName: String, weightsFileName: String) throws -> Contents {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AdapterError.adapterNotFound(path: directory)
        }
        let configurationPath = "\(directory)/\(configurationFileName)"
        let weightsPath = "\(directory)/\(weightsFileName)"
        for path in [configurationPath, weightsPath] where !FileManager.default.fileExists(atPath: path) {
            throw AdapterError.adapterNotFound(path: path)
        }
        guard let configuration = FileManager.default.contents(atPath: configurationPath) else {
            throw AdapterError.invalidAdapter(path: configurationPath, reason: "the file cannot be read")
        }
        return Contents(configurationPath: configurationPath, configuration: configuration, weightsPath: weightsPath,
                        weights: try SafeTensors.read(path: weightsPath))
    }

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

    /// The module paths the weights file `weightsPath` holds adapters for, in file order, each once: `modulePath`
    /// maps a key to its module path, nil for a key that is not a LoRA weight (refused, saying `notLoRA(key)`).
    static func modulePaths(
        weightsPath: String, modulePath: (String) -> String?, notLoRA: (String) -> String
    ) throws -> [String] {
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw AdapterError.adapterNotFound(path: weightsPath) }
        var paths: [String] = []
        for (key, _) in try SafeTensors.read(path: weightsPath).tensors {
            guard let path = modulePath(key) else { throw AdapterError.invalidAdapter(path: weightsPath, reason: notLoRA(key)) }
            if !paths.contains(path) { paths.append(path) }
        }
        return paths
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
