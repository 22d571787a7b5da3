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
public enum PEFTAdapter: AdapterFileFormat {
    public static let format = AdapterFormat.peft
    /// The file names inside an adapter folder.
    public static let weightsFileName = "adapter_model.safetensors"
    public static let configurationFileName = "adapter_config.json"
    public static let weightsMetadata = ["format": "pt"]
    public static let configurationIndent = 2
    public static let storesTransposed = false

    public static let keyPrefix = "base_model.model."
    public static func keySuffix(_ matrix: LoRAMatrix) -> String { matrix == .a ? ".lora_A.weight" : ".lora_B.weight" }

    /// `base_model.model.<module path>.lora_A.weight`.
    public static func aKey(_ modulePath: String) -> String { key(modulePath, .a) }
    /// `base_model.model.<module path>.lora_B.weight`.
    public static func bKey(_ modulePath: String) -> String { key(modulePath, .b) }

    public static func notLoRAKey(_ key: String) -> String {
        if key.contains("lora_magnitude_vector") {
            return "'\(key)' is a DoRA magnitude vector: DoRA normalises the adapted weight, which this project does not implement"
        }
        return "'\(key)' is not a LoRA weight (base_model.model.<module path>.lora_A.weight or .lora_B.weight)"
    }

    public static func matrixName(_ matrix: LoRAMatrix) -> String { matrix == .a ? "lora_A" : "lora_B" }

    /// The names PEFT's `target_modules` would match for these module paths: the last path component of each,
    /// deduplicated and sorted (`["q_proj", "v_proj"]`, `["c_attn"]`).
    public static func targetModules(_ modulePaths: [String]) -> [String] {
        Set(modulePaths.map { String($0.split(separator: ".").last ?? Substring($0)) }).sorted()
    }

    /// PEFT's `init_lora_weights`: a boolean or a method name.
    public enum InitLoRAWeights: Codable, Sendable, Equatable {
        case enabled(Bool)
        case method(String)

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) { self = .enabled(flag) } else { self = .method(try container.decode(String.self)) }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .enabled(let flag): try container.encode(flag)
            case .method(let name): try container.encode(name)
            }
        }
    }

    /// `adapter_config.json`, PEFT's `LoraConfig` keys verbatim. Reading keeps what decides whether the adapter
    /// can be applied; writing gives every key PEFT needs to load it, with PEFT's defaults for what this project
    /// does not use.
    public struct Configuration: Codable, Sendable {
        public var peftType: String?
        public var r: Int?
        public var loraAlpha: Double?
        public var loraDropout: Double?
        public var useRSLoRA: Bool?
        public var useDoRA: Bool?
        public var loraBias: Bool?
        public var bias: String?
        public var initLoRAWeights: InitLoRAWeights?
        /// Only whether they are empty matters: per-module ranks and alphas are refused.
        public var rankPattern: [String: IgnoredJSONValue]?
        public var alphaPattern: [String: IgnoredJSONValue]?
        public var modulesToSaveIsSet = false
        public var baseModelNameOrPath: String?
        public var targetModules: [String] = []

        enum CodingKeys: String, CodingKey {
            case peftType = "peft_type", r, loraAlpha = "lora_alpha", loraDropout = "lora_dropout", useRSLoRA = "use_rslora"
            case useDoRA = "use_dora", loraBias = "lora_bias", bias, initLoRAWeights = "init_lora_weights"
            case rankPattern = "rank_pattern", alphaPattern = "alpha_pattern", modulesToSave = "modules_to_save"
            case baseModelNameOrPath = "base_model_name_or_path", targetModules = "target_modules"
            case fanInFanOut = "fan_in_fan_out", inferenceMode = "inference_mode", layersToTransform = "layers_to_transform"
            case revision, taskType = "task_type"
        }

        init() {}

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            peftType = try container.field(.peftType, "a string")
            r = try container.field(.r, "a positive integer")
            loraAlpha = try container.field(.loraAlpha, "a number")
            loraDropout = try container.field(.loraDropout, "a number in [0, 1)")
            useRSLoRA = try container.field(.useRSLoRA, "true or false")
            useDoRA = try container.field(.useDoRA, "true or false")
            loraBias = try container.field(.loraBias, "true or false")
            bias = try container.field(.bias, "a string")
            initLoRAWeights = try container.field(.initLoRAWeights, "true, false or a method name")
            rankPattern = try container.field(.rankPattern, "an object")
            alphaPattern = try container.field(.alphaPattern, "an object")
            modulesToSaveIsSet = (try container.field(.modulesToSave, "a list") as IgnoredJSONValue?) != nil
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode([String: Int](), forKey: .alphaPattern)
            try container.encode(baseModelNameOrPath, forKey: .baseModelNameOrPath)
            try container.encode(bias ?? "none", forKey: .bias)
            try container.encode(false, forKey: .fanInFanOut)
            try container.encode(true, forKey: .inferenceMode)
            try container.encode(initLoRAWeights ?? .enabled(true), forKey: .initLoRAWeights)
            try container.encodeNil(forKey: .layersToTransform)
            // An integral alpha is written as an integer, as PEFT's own files have it.
            if let alpha = loraAlpha, alpha == alpha.rounded(), abs(alpha) < 1e15 {
                try container.encode(Int64(alpha), forKey: .loraAlpha)
            } else {
                try container.encode(loraAlpha, forKey: .loraAlpha)
            }
            try container.encode(loraDropout ?? 0, forKey: .loraDropout)
            try container.encodeNil(forKey: .modulesToSave)
            try container.encode(peftType ?? "LORA", forKey: .peftType)
            try container.encode(r, forKey: .r)
            try container.encode([String: Int](), forKey: .rankPattern)
            try container.encodeNil(forKey: .revision)
            try container.encode(targetModules, forKey: .targetModules)
            try container.encode("CAUSAL_LM", forKey: .taskType)
            try container.encode(false, forKey: .useDoRA)
            try container.encode(useRSLoRA ?? false, forKey: .useRSLoRA)
        }
    }

    public static func loraConfiguration(_ object: Configuration) throws(AdapterConfigurationProblem) -> LoRAConfiguration {
        func invalid(_ reason: String) -> AdapterConfigurationProblem { AdapterConfigurationProblem(reason) }
        func unsupported(_ reason: String) -> AdapterConfigurationProblem { AdapterConfigurationProblem(reason, unsupported: true) }
        guard let peftType = object.peftType else { throw invalid("no \"peft_type\" string") }
        guard peftType == "LORA" else {
            throw unsupported("peft_type is \"\(peftType)\"; only \"LORA\" adapters (lora_A, lora_B) can be loaded")
        }
        if object.useDoRA == true {
            throw unsupported("use_dora is true: DoRA adds a magnitude vector and normalises the adapted weight, "
                + "which this project does not implement")
        }
        for (key, pattern) in [("rank_pattern", object.rankPattern), ("alpha_pattern", object.alphaPattern)] {
            if let pattern, !pattern.isEmpty {
                throw unsupported("\(key) is not empty (\(pattern.keys.sorted().joined(separator: ", "))): per-module "
                    + "ranks and alphas are not supported; every module must use r and lora_alpha")
            }
        }
        if let bias = object.bias, bias != "none" {
            throw unsupported("bias is \"\(bias)\": the adapter also trains the base model's biases, which this loader "
                + "does not apply")
        }
        if object.loraBias == true {
            throw unsupported("lora_bias is true: lora_B has a bias, which this project does not implement")
        }
        if object.modulesToSaveIsSet {
            throw unsupported("modules_to_save is set: the adapter carries whole trained copies of base-model modules, "
                + "which this loader does not apply")
        }
        guard let rank = object.r, rank > 0 else { throw invalid("\"r\" is not a positive integer") }
        guard let alpha = object.loraAlpha else { throw invalid("\"lora_alpha\" is not a number") }
        let dropout = object.loraDropout ?? 0
        guard (0..<1).contains(dropout) else { throw invalid("\"lora_dropout\" is not a number in [0, 1)") }
        // How A and B started matters only for a fresh adapter; the weights come from the file. Methods that also
        // rewrite the base model's weights (PiSSA, OLoRA, CorDA, LoftQ) would need those weights, so are refused.
        var initialization = LoRAConfiguration.Initialization.kaiming
        if case .method(let method) = object.initLoRAWeights {
            if method == "gaussian" {
                initialization = .gaussian
            } else if ["pissa", "olora", "corda", "loftq"].contains(where: { method.lowercased().hasPrefix($0) }) {
                throw unsupported("init_lora_weights is \"\(method)\", which changes the base model's weights as well")
            }
        }
        return LoRAConfiguration(rank: rank, alpha: alpha, dropout: dropout, useRSLoRA: object.useRSLoRA ?? false,
                                 initialization: initialization)
    }

    public static func configuration(for adapter: LoRAAdapter, context: AdapterSaveContext) -> Configuration {
        var configuration = Configuration()
        configuration.r = adapter.configuration.rank
        configuration.loraAlpha = adapter.configuration.alpha
        configuration.loraDropout = adapter.configuration.dropout
        configuration.useRSLoRA = adapter.configuration.useRSLoRA
        configuration.initLoRAWeights = adapter.configuration.initialization == .gaussian ? .method("gaussian") : .enabled(true)
        configuration.baseModelNameOrPath = context.baseModelNameOrPath
        configuration.targetModules = targetModules(adapter.modules.map(\.modulePath))
        return configuration
    }
}
