import Foundation
import ONNXGraph

/// PEFT's adapter folder (`PeftModel.save_pretrained` / `PeftModel.from_pretrained`, peft ≥ 0.7): the one place
/// where PEFT's file names, tensor keys and `adapter_config.json` keys meet `LoRAAdapter` and `LoRAConfiguration`.
///
///     adapter_model.safetensors   base_model.model.<module path>.lora_A.weight   [r, in]
///                                 base_model.model.<module path>.lora_B.weight   [out, r]
///     adapter_config.json         peft_type "LORA", r, lora_alpha, lora_dropout, use_rslora, init_lora_weights, ...
///
/// The orientation is PEFT's, which is also `LoRAAdapter`'s, so tensors cross this boundary unchanged. PEFT keeps
/// it for GPT-2's `Conv1D` too (`c_attn`, where PEFT sets `fan_in_fan_out`): `fan_in_fan_out` only says how PEFT
/// multiplies the base weight, never how lora_A and lora_B are stored, so they are `[r, in]` and `[out, r]` there
/// as everywhere, and `false` is written (PEFT corrects it itself, with a warning, on a `Conv1D`).
public enum PEFTAdapter {
    /// The file names inside an adapter folder.
    public static let weightsFileName = "adapter_model.safetensors"
    public static let configurationFileName = "adapter_config.json"

    static let keyPrefix = "base_model.model."
    static let aSuffix = ".lora_A.weight"
    static let bSuffix = ".lora_B.weight"

    /// `base_model.model.<module path>.lora_A.weight`.
    public static func aKey(_ modulePath: String) -> String { keyPrefix + modulePath + aSuffix }
    /// `base_model.model.<module path>.lora_B.weight`.
    public static func bKey(_ modulePath: String) -> String { keyPrefix + modulePath + bSuffix }

    /// The names PEFT's `target_modules` would match for these module paths: the last path component of each,
    /// deduplicated and sorted (`["q_proj", "v_proj"]`, `["c_attn"]`).
    public static func targetModules(_ modulePaths: [String]) -> [String] {
        Set(modulePaths.map { String($0.split(separator: ".").last ?? Substring($0)) }).sorted()
    }

    /// `adapter_config.json` for `configuration`: every key PEFT's `LoraConfig` needs to load the adapter, with
    /// PEFT's names and PEFT's defaults for what this project does not use. Keys sorted, two-space indent, as
    /// PEFT writes it.
    static func configurationJSON(_ configuration: LoRAConfiguration, modulePaths: [String], baseModel: String?) -> String {
        let alpha = configuration.alpha
        let alphaText = alpha == alpha.rounded() && abs(alpha) < 1e15 ? String(Int64(alpha)) : "\(alpha)"
        let initialization = switch configuration.initialization {
        case .kaiming: "true"
        case .gaussian: jsonString("gaussian")
        }
        let targets = targetModules(modulePaths)
        let fields: [(String, String)] = [
            ("alpha_pattern", "{}"),
            ("base_model_name_or_path", baseModel.map(jsonString) ?? "null"),
            ("bias", jsonString("none")),
            ("fan_in_fan_out", "false"),
            ("inference_mode", "true"),
            ("init_lora_weights", initialization),
            ("layers_to_transform", "null"),
            ("lora_alpha", alphaText),
            ("lora_dropout", "\(configuration.dropout)"),
            ("modules_to_save", "null"),
            ("peft_type", jsonString("LORA")),
            ("r", "\(configuration.rank)"),
            ("rank_pattern", "{}"),
            ("revision", "null"),
            ("target_modules", targets.isEmpty ? "[]"
                : "[\n" + targets.map { "    " + jsonString($0) }.joined(separator: ",\n") + "\n  ]"),
            ("task_type", jsonString("CAUSAL_LM")),
            ("use_dora", "false"),
            ("use_rslora", configuration.useRSLoRA ? "true" : "false"),
        ]
        return "{\n" + fields.map { "  \(jsonString($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"
    }

    /// Reads `adapter_config.json` into a `LoRAConfiguration`, refusing what this project cannot apply.
    static func configuration(from data: Data, path: String) throws -> LoRAConfiguration {
        func invalid(_ reason: String) -> AdapterError { .invalidAdapter(path: path, reason: reason) }
        func unsupported(_ reason: String) -> AdapterError { .unsupportedAdapter(path: path, reason: reason) }
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw invalid("the file is not a JSON object")
            }
            object = parsed
        } catch let error as AdapterError {
            throw error
        } catch {
            throw invalid("the file is not valid JSON (\(error.localizedDescription))")
        }
        func isNull(_ key: String) -> Bool { object[key] == nil || object[key] is NSNull }

        guard let peftType = object["peft_type"] as? String else { throw invalid("no \"peft_type\" string") }
        guard peftType == "LORA" else {
            throw unsupported("peft_type is \"\(peftType)\"; only \"LORA\" adapters (lora_A, lora_B) can be loaded")
        }
        if jsonBoolean(object["use_dora"]) == true {
            throw unsupported("use_dora is true: DoRA adds a magnitude vector and normalises the adapted weight, "
                + "which this project does not implement")
        }
        for key in ["rank_pattern", "alpha_pattern"] where !isNull(key) {
            guard let pattern = object[key] as? [String: Any] else { throw invalid("\"\(key)\" is not an object") }
            if !pattern.isEmpty {
                throw unsupported("\(key) is not empty (\(pattern.keys.sorted().joined(separator: ", "))): per-module "
                    + "ranks and alphas are not supported; every module must use r and lora_alpha")
            }
        }
        if let bias = object["bias"] as? String, bias != "none" {
            throw unsupported("bias is \"\(bias)\": the adapter also trains the base model's biases, which this loader "
                + "does not apply")
        }
        if jsonBoolean(object["lora_bias"]) == true {
            throw unsupported("lora_bias is true: lora_B has a bias, which this project does not implement")
        }
        if !isNull("modules_to_save") {
            throw unsupported("modules_to_save is set: the adapter carries whole trained copies of base-model modules, "
                + "which this loader does not apply")
        }

        guard let rank = jsonInteger(object["r"]), rank > 0 else { throw invalid("\"r\" is not a positive integer") }
        guard let alpha = jsonNumber(object["lora_alpha"]) else {
            throw invalid("\"lora_alpha\" is not a number")
        }
        var dropout = 0.0
        if !isNull("lora_dropout") {
            guard let value = jsonNumber(object["lora_dropout"]), (0..<1).contains(value) else {
                throw invalid("\"lora_dropout\" is not a number in [0, 1)")
            }
            dropout = value
        }
        var useRSLoRA = false
        if !isNull("use_rslora") {
            guard let value = jsonBoolean(object["use_rslora"]) else { throw invalid("\"use_rslora\" is not true or false") }
            useRSLoRA = value
        }
        // How A and B started matters only for a fresh adapter; the weights come from the file. Methods that also
        // rewrite the base model's weights (PiSSA, OLoRA, CorDA, LoftQ) would need those weights, so are refused.
        var initialization = LoRAConfiguration.Initialization.kaiming
        if let method = object["init_lora_weights"] as? String {
            if method == "gaussian" {
                initialization = .gaussian
            } else if ["pissa", "olora", "corda", "loftq"].contains(where: { method.lowercased().hasPrefix($0) }) {
                throw unsupported("init_lora_weights is \"\(method)\", which changes the base model's weights as well")
            }
        }
        return LoRAConfiguration(rank: rank, alpha: alpha, dropout: dropout, useRSLoRA: useRSLoRA,
                                 initialization: initialization)
    }
}

extension PEFTAdapter {
    /// The module paths a PEFT adapter folder holds weights for, in file order (each once), read from the keys of
    /// its `adapter_model.safetensors`: what to look for in a model the adapter was not trained on here.
    public static func modulePaths(in directory: String) throws -> [String] {
        try AdapterFolder.modulePaths(weightsPath: "\(directory)/\(weightsFileName)", modulePath: { key in
            guard key.hasPrefix(keyPrefix), let suffix = [aSuffix, bSuffix].first(where: { key.hasSuffix($0) }) else { return nil }
            return String(key.dropFirst(keyPrefix.count).dropLast(suffix.count))
        }, notLoRA: notLoRAKey)
    }

    /// Why `key` is refused, naming the method when the key gives it away.
    static func notLoRAKey(_ key: String) -> String {
        if key.contains("lora_magnitude_vector") {
            return "'\(key)' is a DoRA magnitude vector: DoRA normalises the adapted weight, which this project does not implement"
        }
        return "'\(key)' is not a LoRA weight (base_model.model.<module path>.lora_A.weight or .lora_B.weight)"
    }
}

extension LoRAAdapter {
    /// Saves this adapter as a PEFT adapter folder `directory` (created if needed): `adapter_model.safetensors`
    /// (float32 `lora_A` / `lora_B` per module, `__metadata__` `{"format": "pt"}` as PEFT writes) and
    /// `adapter_config.json`, each written atomically. `baseModelNameOrPath` is recorded as PEFT's
    /// `base_model_name_or_path` (the ONNX model's path, or null).
    public func save(to directory: String, baseModelNameOrPath: String? = nil) throws {
        var tensors: [(name: String, tensor: Tensor)] = []
        for module in modules {
            guard let a = a[module.modulePath], let b = b[module.modulePath], a.storage.kind == .float, b.storage.kind == .float
            else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter has no float A and B for \(module.modulePath)")
            }
            tensors.append((PEFTAdapter.aKey(module.modulePath), Tensor(shape: a.shape, floats: a.floats)))
            tensors.append((PEFTAdapter.bKey(module.modulePath), Tensor(shape: b.shape, floats: b.floats)))
        }
        let json = PEFTAdapter.configurationJSON(configuration, modulePaths: modules.map(\.modulePath),
                                                 baseModel: baseModelNameOrPath)
        try AdapterFolder.write(directory, weights: tensors, metadata: ["format": "pt"], weightsFileName: PEFTAdapter.weightsFileName,
                                configuration: json, configurationFileName: PEFTAdapter.configurationFileName)
    }

    /// Loads the PEFT adapter folder `directory` for `modules` (the model's, from `LoRAModule.modules`): every
    /// key must be `base_model.model.<module path>.lora_A.weight` or `.lora_B.weight` of one of `modules`, every
    /// module must have both, with shapes `[r, in]` and `[out, r]`; and on a fused projection the rows of B for
    /// output features the module does not adapt must be zero (else the loaded model would differ from PEFT's).
    /// Values of any float dtype are converted to float32.
    public static func load(from directory: String, modules: [LoRAModule]) throws -> LoRAAdapter {
        let folder = try AdapterFolder.read(directory, configurationFileName: PEFTAdapter.configurationFileName,
                                            weightsFileName: PEFTAdapter.weightsFileName)
        let configuration = try PEFTAdapter.configuration(from: folder.configuration, path: folder.configurationPath)
        let (file, weightsPath) = (folder.weights, folder.weightsPath)

        let byPath = Dictionary(modules.map { ($0.modulePath, $0) }, uniquingKeysWith: { first, _ in first })
        var a: [String: Tensor] = [:]
        var b: [String: Tensor] = [:]
        for (key, tensor) in file.tensors {
            let isA = key.hasSuffix(PEFTAdapter.aSuffix), isB = key.hasSuffix(PEFTAdapter.bSuffix)
            guard key.hasPrefix(PEFTAdapter.keyPrefix), isA || isB else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: PEFTAdapter.notLoRAKey(key))
            }
            let modulePath = String(key.dropFirst(PEFTAdapter.keyPrefix.count)
                .dropLast((isA ? PEFTAdapter.aSuffix : PEFTAdapter.bSuffix).count))
            guard let module = byPath[modulePath] else {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: modulePath, reason:
                    "is in the adapter ('\(key)') but not among the model's adapted modules "
                    + "(\(modules.map(\.modulePath).joined(separator: ", ")))")
            }
            guard tensor.storage.kind == .float else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: "'\(key)' holds \(tensor.dataType) values, not floats")
            }
            let expected = isA ? [configuration.rank, module.inFeatures] : [module.outFeatures, configuration.rank]
            guard tensor.shape == expected else {
                throw AdapterError.adapterShapeMismatch(path: weightsPath, key: key, expected: expected, actual: tensor.shape)
            }
            let values = Tensor(shape: tensor.shape, floats: tensor.floats)
            if isA { a[modulePath] = values } else { b[modulePath] = values }
        }
        for module in modules {
            for (tensors, key) in [(a, PEFTAdapter.aKey(module.modulePath)), (b, PEFTAdapter.bKey(module.modulePath))]
            where tensors[module.modulePath] == nil {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath,
                                                          reason: "is adapted in the model but the adapter has no '\(key)'")
            }
            let trainable = Set(module.trainableOutputs)
            let rows = b[module.modulePath]!.floats
            let rank = configuration.rank
            if let row = (0..<module.outFeatures).first(where: { row in
                !trainable.contains(row) && rows[(row * rank)..<((row + 1) * rank)].contains { $0 != 0 }
            }) {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath, reason:
                    "has nonzero lora_B rows for output features this model does not adapt (first: \(row)); the model "
                    + "adapts only \(module.targets.map(\.kind.rawValue).joined(separator: ", ")) of this fused projection "
                    + "(choose the others with target patterns)")
            }
        }
        return LoRAAdapter(configuration: configuration, modules: modules, a: a, b: b)
    }
}
