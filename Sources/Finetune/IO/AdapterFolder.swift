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
            throw FinetuneError.adapterNotFound(path: directory)
        }
        let configurationPath = "\(directory)/\(configurationFileName)"
        let weightsPath = "\(directory)/\(weightsFileName)"
        for path in [configurationPath, weightsPath] where !FileManager.default.fileExists(atPath: path) {
            throw FinetuneError.adapterNotFound(path: path)
        }
        guard let configuration = FileManager.default.contents(atPath: configurationPath) else {
            throw FinetuneError.invalidAdapter(path: configurationPath, reason: "the file cannot be read")
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
            throw FinetuneError.cannotWrite(path: directory, reason: "it is a file, not a folder")
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FinetuneError.cannotWrite(path: directory, reason: "cannot create the folder: \(error.localizedDescription)")
        }
        try SafeTensors.write(weights, metadata: metadata, to: "\(directory)/\(weightsFileName)")
        try AtomicFile.write(Data(configuration.utf8), to: "\(directory)/\(configurationFileName)")
    }
}
