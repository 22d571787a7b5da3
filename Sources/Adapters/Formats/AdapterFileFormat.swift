import Foundation
import ONNXGraph

/// Which of a LoRA module's two matrices a tensor holds.
public enum LoRAMatrix: Sendable, CaseIterable {
    /// `A`, the down-projection (PEFT: `[r, in]`).
    case a
    /// `B`, the up-projection (PEFT: `[out, r]`).
    case b
}

/// What `LoRAAdapter.save` needs to know beyond the adapter to write a format's configuration.
public struct AdapterSaveContext: Sendable {
    /// PEFT's `base_model_name_or_path` (the ONNX model's path, or nil for null).
    public var baseModelNameOrPath: String?
    /// The model's number of transformer blocks (mlx-lm's `num_layers` counts from the last one); nil when every
    /// block is adapted.
    public var layerCount: Int?

    public init(baseModelNameOrPath: String? = nil, layerCount: Int? = nil) {
        self.baseModelNameOrPath = baseModelNameOrPath
        self.layerCount = layerCount
    }
}

/// One adapter folder format: a safetensors file of LoRA matrices and a JSON configuration, with the format's file
/// names, tensor keys, orientation and configuration keys. The one place each format's names meet `LoRAAdapter`
/// is its conformance (`PEFTAdapter`, `MLXAdapter`); loading and saving are written once, over this protocol
/// (`AdapterFolder.read`, `LoRAAdapter.save(to:format:context:)`).
public protocol AdapterFileFormat {
    /// `adapter_config.json` as the format writes it, verbatim key names at this boundary.
    associatedtype Configuration: Codable

    /// The folder format this describes.
    static var format: AdapterFormat { get }
    static var weightsFileName: String { get }
    static var configurationFileName: String { get }
    /// safetensors `__metadata__` written with the weights.
    static var weightsMetadata: [String: String] { get }
    /// Indentation of the written configuration, as the format's own tool writes it.
    static var configurationIndent: Int { get }
    /// True when the file stores `Aᵀ` `[in, r]` and `Bᵀ` `[r, out]`; false for PEFT's own orientation.
    static var storesTransposed: Bool { get }

    /// Tensor keys are `keyPrefix + <module path> + keySuffix(matrix)`.
    static var keyPrefix: String { get }
    static func keySuffix(_ matrix: LoRAMatrix) -> String
    /// Why `key` is refused, naming the method when the key gives it away.
    static func notLoRAKey(_ key: String) -> String
    /// The format's name of a matrix in messages (`lora_B`, `lora_b`).
    static func matrixName(_ matrix: LoRAMatrix) -> String

    /// The LoRA hyper-parameters of a read configuration, refusing (with `AdapterConfigurationProblem`) what this
    /// project cannot apply.
    static func loraConfiguration(_ configuration: Configuration) throws(AdapterConfigurationProblem) -> LoRAConfiguration
    /// A further check of one module the adapter holds (mlx-lm applies only the modules its `keys` list).
    static func check(modulePath: String, key: String, configuration: Configuration) throws(AdapterConfigurationProblem)
    /// The configuration written for `adapter` (an `AdapterConfigurationProblem` when `context` cannot be honoured).
    static func configuration(for adapter: LoRAAdapter, context: AdapterSaveContext) throws -> Configuration
}

extension AdapterFileFormat {
    /// The tensor key of `matrix` of the module at `modulePath`.
    public static func key(_ modulePath: String, _ matrix: LoRAMatrix) -> String {
        keyPrefix + modulePath + keySuffix(matrix)
    }

    /// The module path and matrix of a tensor key, or nil for a key that is not a LoRA weight of this format.
    public static func parseKey(_ key: String) -> (modulePath: String, matrix: LoRAMatrix)? {
        guard key.hasPrefix(keyPrefix) else { return nil }
        for matrix in LoRAMatrix.allCases where key.hasSuffix(keySuffix(matrix)) {
            return (String(key.dropFirst(keyPrefix.count).dropLast(keySuffix(matrix).count)), matrix)
        }
        return nil
    }

    public static func check(modulePath: String, key: String, configuration: Configuration) throws(AdapterConfigurationProblem) {}
}

/// Why an adapter configuration is refused: `unsupported` when it is valid but asks for what this project does not
/// implement (DoRA, another PEFT method), else invalid. Turned into an `AdapterError` naming the file.
public struct AdapterConfigurationProblem: Error, Sendable {
    public var reason: String
    public var unsupported: Bool

    public init(_ reason: String, unsupported: Bool = false) {
        self.reason = reason
        self.unsupported = unsupported
    }

    func error(path: String) -> AdapterError {
        unsupported ? .unsupportedAdapter(path: path, reason: reason) : .invalidAdapter(path: path, reason: reason)
    }
}

/// The adapter folder formats read and written here.
public enum AdapterFormat: String, Sendable, CaseIterable, Codable {
    /// PEFT's `adapter_model.safetensors` + `adapter_config.json` (TRL, PEFT, and this project's `train`).
    case peft
    /// mlx-lm's `adapters.safetensors` + `adapter_config.json`.
    case mlx

    /// The format's description.
    var fileFormat: any AdapterFileFormat.Type {
        switch self {
        case .peft: PEFTAdapter.self
        case .mlx: MLXAdapter.self
        }
    }

    /// The format of the adapter folder `directory`, told by the weights file it holds.
    public static func detect(_ directory: String) throws -> AdapterFormat {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AdapterError.adapterNotFound(path: directory)
        }
        if let format = allCases.first(where: { FileManager.default.fileExists(atPath: "\(directory)/\($0.fileFormat.weightsFileName)") }) {
            return format
        }
        // No weights file: the configuration tells the format, so that the missing file can be named.
        struct Probe: Decodable {
            var peftType: IgnoredJSONValue?
            var loraParameters: IgnoredJSONValue?
            enum CodingKeys: String, CodingKey { case peftType = "peft_type", loraParameters = "lora_parameters" }
        }
        if let data = FileManager.default.contents(atPath: "\(directory)/adapter_config.json"),
           let probe = try? JSONDecoder().decode(Probe.self, from: data) {
            if probe.peftType != nil { return .peft }
            if probe.loraParameters != nil { return .mlx }
        }
        throw AdapterError.invalidAdapter(path: directory, reason: "holds none of "
            + allCases.map { "\($0.fileFormat.weightsFileName) (\($0.rawValue))" }.joined(separator: ", "))
    }
}

// MARK: - Reading

extension AdapterFolder {
    /// Reads the adapter folder `directory` (PEFT or MLX, detected) for `model`, which it need not have been
    /// trained on here: the module paths in the adapter's keys are looked up among the graph's projections (found
    /// by structure and labelled from node names or `pkg.torch.onnx.name_scopes`), so an adapter trained with
    /// TRL/PEFT or mlx-lm on the Hugging Face model applies to its ONNX export. Every module of the adapter must be
    /// found; a fused projection (`c_attn`, `qkv_proj`, `query_key_value`) is adapted on all of its output features.
    /// The one entry point of `run --adapter`, `export`, `convert`.
    public static func read(_ directory: String, for model: Model) throws -> (adapter: LoRAAdapter, format: AdapterFormat) {
        let format = try AdapterFormat.detect(directory)
        return (try read(directory, as: format.fileFormat, for: model), format)
    }

    /// Reads the adapter folder `directory` (PEFT or MLX, detected) for exactly `modules` (the model's, from
    /// `LoRAModule.modules`), as `train --init-adapter` does.
    public static func read(_ directory: String, modules: [LoRAModule]) throws -> LoRAAdapter {
        try read(directory, as: try AdapterFormat.detect(directory).fileFormat, modules: modules)
    }

    static func read<Format: AdapterFileFormat>(_ directory: String, as format: Format.Type, for model: Model) throws -> LoRAAdapter {
        let weightsPath = "\(directory)/\(Format.weightsFileName)"
        // The configuration first, so that a DoRA or non-LoRA adapter is refused for what it is.
        _ = try configuration(directory, as: format)
        var paths: [String] = []
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw AdapterError.adapterNotFound(path: weightsPath) }
        let file = try SafeTensors.read(path: weightsPath)
        for (key, _) in file.tensors {
            guard let path = Format.parseKey(key)?.modulePath else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: Format.notLoRAKey(key))
            }
            if !paths.contains(path) { paths.append(path) }
        }
        let modules = try LoRAModule.modules(atPaths: paths, in: model, weightsPath: weightsPath)
        return try read(directory, as: format, modules: modules, weights: file)
    }

    /// The parsed configuration of `directory` and its path.
    static func configuration<Format: AdapterFileFormat>(
        _ directory: String, as format: Format.Type
    ) throws -> (Format.Configuration, LoRAConfiguration, path: String) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AdapterError.adapterNotFound(path: directory)
        }
        let path = "\(directory)/\(Format.configurationFileName)"
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.adapterNotFound(path: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdapterError.invalidAdapter(path: path, reason: "the file cannot be read")
        }
        do {
            let configuration = try decodeConfiguration(Format.Configuration.self, from: data)
            return (configuration, try Format.loraConfiguration(configuration), path)
        } catch let problem as AdapterConfigurationProblem {
            throw problem.error(path: path)
        }
    }

    /// Loads `directory` in `Format` for `modules`: every key must be a LoRA weight of one of `modules`, every
    /// module must have both matrices with the shapes its rank and features give, values of any float dtype are
    /// converted to float32 and turned to PEFT's orientation; and on a fused projection the rows of B for output
    /// features the module does not adapt must be zero (else the loaded model would differ from the adapter's).
    /// `weights` is the weights file when the caller has read it already.
    static func read<Format: AdapterFileFormat>(
        _ directory: String, as format: Format.Type, modules: [LoRAModule], weights: SafeTensors.File? = nil
    ) throws -> LoRAAdapter {
        let (fileConfiguration, configuration, configurationPath) = try Self.configuration(directory, as: format)
        let weightsPath = "\(directory)/\(Format.weightsFileName)"
        let file: SafeTensors.File
        if let weights {
            file = weights
        } else {
            guard FileManager.default.fileExists(atPath: weightsPath) else { throw AdapterError.adapterNotFound(path: weightsPath) }
            file = try SafeTensors.read(path: weightsPath)
        }

        let byPath = Dictionary(modules.map { ($0.modulePath, $0) }, uniquingKeysWith: { first, _ in first })
        let rank = configuration.rank
        var matrices: [LoRAMatrix: [String: Tensor]] = [.a: [:], .b: [:]]
        for (key, tensor) in file.tensors {
            guard let (modulePath, matrix) = Format.parseKey(key) else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: Format.notLoRAKey(key))
            }
            guard let module = byPath[modulePath] else {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: modulePath, reason:
                    "is in the adapter ('\(key)') but not among the model's adapted modules "
                    + "(\(modules.map(\.modulePath).joined(separator: ", ")))")
            }
            do {
                try Format.check(modulePath: modulePath, key: key, configuration: fileConfiguration)
            } catch {
                throw error.error(path: configurationPath)
            }
            guard tensor.storage.kind == .float, tensor.rank == 2 else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: "'\(key)' is not a float matrix (\(tensor.dataType) \(tensor.shape))")
            }
            var expected = matrix == .a ? [rank, module.inFeatures] : [module.outFeatures, rank]
            if Format.storesTransposed { expected.reverse() }
            guard tensor.shape == expected else {
                throw AdapterError.adapterShapeMismatch(path: weightsPath, key: key, expected: expected, actual: tensor.shape)
            }
            let values = Tensor(shape: tensor.shape, floats: tensor.floats)
            matrices[matrix]![modulePath] = Format.storesTransposed ? transposed(values) : values
        }
        let (a, b) = (matrices[.a]!, matrices[.b]!)
        for module in modules {
            for matrix in LoRAMatrix.allCases where matrices[matrix]![module.modulePath] == nil {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath,
                    reason: "is adapted in the model but the adapter has no '\(Format.key(module.modulePath, matrix))'")
            }
            let trainable = Set(module.trainableOutputs)
            let rows = b[module.modulePath]!.floats
            if let row = (0..<module.outFeatures).first(where: { row in
                !trainable.contains(row) && rows[(row * rank)..<((row + 1) * rank)].contains { $0 != 0 }
            }) {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath, reason:
                    "has nonzero \(Format.matrixName(.b)) "
                    + "\(Format.storesTransposed ? "columns" : "rows") for output features this model does not adapt "
                    + "(first: \(row)); the model adapts only \(module.targets.map(\.kind.rawValue).joined(separator: ", ")) "
                    + "of this fused projection (choose the others with target patterns)")
            }
        }
        return LoRAAdapter(configuration: configuration, modules: modules, a: a, b: b)
    }

    /// Decodes a configuration strictly (a JSON `1` is no boolean, `true` no number), naming what is wrong.
    static func decodeConfiguration<Configuration: Decodable>(_ type: Configuration.Type, from data: Data) throws(AdapterConfigurationProblem) -> Configuration {
        do {
            return try JSONDecoder().decode(Configuration.self, from: data)
        } catch let problem as AdapterConfigurationProblem {
            throw problem
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw AdapterConfigurationProblem("the file is not a JSON object")
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            throw AdapterConfigurationProblem("the file is not valid JSON (\(context.underlyingError.map { "\($0)" } ?? context.debugDescription))")
        } catch {
            throw AdapterConfigurationProblem("\(error)")
        }
    }
}

extension KeyedDecodingContainer {
    /// The value under `key`, nil when missing or null; a value of another kind is refused as not being `what`
    /// (`"r" is not a positive integer`).
    func field<Value: Decodable>(_ key: Key, _ what: String) throws(AdapterConfigurationProblem) -> Value? {
        do {
            return try decodeIfPresent(Value.self, forKey: key)
        } catch {
            throw AdapterConfigurationProblem("\"\(key.stringValue)\" is not \(what)")
        }
    }
}

/// Any JSON value, skipped: for configuration keys whose presence matters, not their content.
public struct IgnoredJSONValue: Codable, Sendable {
    public init() {}
    public init(from decoder: any Decoder) throws {}
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encodeNil()
    }
}

extension Model {
    /// The model at `path` and, when `adapterPath` names an adapter folder (PEFT or MLX, detected), that adapter
    /// read for it (`AdapterFolder.read(_:for:)`): the command line's one way to open a model with an adapter
    /// (`run`, `export`).
    public static func load(path: String, adapterPath: String?) throws -> (model: Model, adapter: LoRAAdapter?) {
        let model = try Model.load(path: path)
        return (model, try adapterPath.map { try AdapterFolder.read($0, for: model).adapter })
    }
}

// MARK: - Writing

extension LoRAAdapter {
    /// Saves this adapter as an adapter folder `directory` (created if needed) in `format`, each file written
    /// atomically: the format's safetensors file (float32 matrices in the format's orientation) and its
    /// `adapter_config.json` (keys sorted, indented as the format's own tool writes it).
    public func save(to directory: String, format: AdapterFormat = .peft, context: AdapterSaveContext = AdapterSaveContext()) throws {
        try save(to: directory, as: format.fileFormat, context: context)
    }

    /// Saves this adapter as a PEFT adapter folder (`PeftModel.from_pretrained` loads it on the Hugging Face model);
    /// `baseModelNameOrPath` is recorded as PEFT's `base_model_name_or_path`.
    public func save(to directory: String, baseModelNameOrPath: String?) throws {
        try save(to: directory, format: .peft, context: AdapterSaveContext(baseModelNameOrPath: baseModelNameOrPath))
    }

    private func save<Format: AdapterFileFormat>(to directory: String, as format: Format.Type, context: AdapterSaveContext) throws {
        var tensors: [(name: String, tensor: Tensor)] = []
        for module in modules {
            // Shapes are the reader's to check (a test writes a wrong one on purpose); the writer needs matrices.
            guard let a = a[module.modulePath], let b = b[module.modulePath], a.storage.kind == .float, b.storage.kind == .float,
                  a.rank == 2, b.rank == 2 else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter has no float A [\(configuration.rank), \(module.inFeatures)] "
                    + "and B [\(module.outFeatures), \(configuration.rank)] matrices for \(module.modulePath)")
            }
            for (matrix, values) in [(LoRAMatrix.a, a), (.b, b)] {
                let float = Tensor(shape: values.shape, floats: values.floats)
                tensors.append((Format.key(module.modulePath, matrix), Format.storesTransposed ? transposed(float) : float))
            }
        }
        let configuration: Format.Configuration
        do {
            configuration = try Format.configuration(for: self, context: context)
        } catch let problem as AdapterConfigurationProblem {
            throw AdapterError.cannotWrite(path: directory, reason: problem.reason)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let json = indentedJSON(try encoder.encode(configuration), indent: Format.configurationIndent)
        try AdapterFolder.write(directory, weights: tensors, metadata: Format.weightsMetadata, weightsFileName: Format.weightsFileName,
                                configuration: json, configurationFileName: Format.configurationFileName)
    }
}

/// Compact JSON re-laid as Python's `json.dumps(indent:)` writes it (`"key": value`, one member per line, `[]` and
/// `{}` kept empty), which is how PEFT and mlx-lm write their configurations. Strings are copied byte for byte.
func indentedJSON(_ compact: Data, indent: Int) -> String {
    let bytes = [UInt8](compact)
    var out: [UInt8] = []
    var depth = 0
    var index = 0
    func newline() { out.append(UInt8(ascii: "\n")); out += [UInt8](repeating: UInt8(ascii: " "), count: depth * indent) }
    while index < bytes.count {
        let byte = bytes[index]
        switch byte {
        case UInt8(ascii: "\""):
            let start = index
            index += 1
            while index < bytes.count && bytes[index] != UInt8(ascii: "\"") {
                index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
            }
            out += bytes[start...min(index, bytes.count - 1)]
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let closing = byte == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            out.append(byte)
            if index + 1 < bytes.count && bytes[index + 1] == closing {
                out.append(closing)
                index += 1
            } else {
                depth += 1
                newline()
            }
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            depth -= 1
            newline()
            out.append(byte)
        case UInt8(ascii: ","):
            out.append(byte)
            newline()
        case UInt8(ascii: ":"):
            out += [byte, UInt8(ascii: " ")]
        default:
            out.append(byte)
        }
        index += 1
    }
    return String(decoding: out, as: UTF8.self) + "\n"
}
