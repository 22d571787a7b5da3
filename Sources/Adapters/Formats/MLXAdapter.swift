import Foundation
import ONNXGraph

/// mlx-lm's LoRA adapter folder (`mlx_lm.lora --train` writes it; `mlx_lm.generate --adapter-path`, `mlx_lm.fuse`
/// and `mlx_lm.tuner.utils.load_adapters` read it): the one place where MLX's file names, tensor keys and
/// `adapter_config.json` keys meet `LoRAAdapter`.
///
///     adapters.safetensors   <module path>.lora_a   [in, r]    (PEFT's Aᵀ)
///                            <module path>.lora_b   [r, out]   (PEFT's Bᵀ)
///     adapter_config.json    fine_tune_type "lora", num_layers, lora_parameters {rank, scale, dropout, keys}
///
/// mlx-lm's `LoRALinear` (mlx_lm/tuner/lora.py) computes `y = x·Wᵀ + scale·((x·lora_a)·lora_b)`, so with
/// `lora_a = Aᵀ` and `lora_b = Bᵀ` its update is PEFT's `scale·B·A·x`. MLX stores `scale` itself, never alpha.
///
/// Loading (`load_adapters`): for `fine_tune_type` other than "full", mlx-lm wraps, in each of the *last*
/// `num_layers` blocks of `model.layers` (all of them for -1 or 0), every module whose path relative to the block
/// is in `keys` (and any module of the whole model whose full path is), then loads the weights with
/// `strict=False`, so a weight for a module it did not wrap is silently ignored. Wrapped modules without weights
/// keep `lora_b = 0` and do not change the model.
///
/// Keys are the Hugging Face module path plus `.lora_a` / `.lora_b`. For Llama-family models (Llama, Mistral,
/// Qwen2, Phi-3, Gemma) mlx-lm's module paths are the Hugging Face ones (`model.layers.0.self_attn.q_proj`), so
/// the files load as they are; for GPT-2 and GPT-NeoX mlx-lm names the root `model` (`model.h.0.attn.c_attn`,
/// not `transformer.h.0.attn.c_attn`), so those keys would need renaming before mlx-lm applies them.
public enum MLXAdapter: AdapterFileFormat {
    public static let format = AdapterFormat.mlx
    /// The file names inside an adapter folder.
    public static let weightsFileName = "adapters.safetensors"
    public static let configurationFileName = "adapter_config.json"
    public static let weightsMetadata = ["format": "mlx"]
    public static let configurationIndent = 4
    /// `lora_a = Aᵀ` `[in, r]`, `lora_b = Bᵀ` `[r, out]`.
    public static let storesTransposed = true

    public static let keyPrefix = ""
    public static func keySuffix(_ matrix: LoRAMatrix) -> String { matrix == .a ? ".lora_a" : ".lora_b" }

    /// `<module path>.lora_a`.
    public static func aKey(_ modulePath: String) -> String { key(modulePath, .a) }
    /// `<module path>.lora_b`.
    public static func bKey(_ modulePath: String) -> String { key(modulePath, .b) }

    public static func notLoRAKey(_ key: String) -> String {
        "'\(key)' is not an MLX LoRA weight (<module path>.lora_a or <module path>.lora_b)"
    }

    public static func matrixName(_ matrix: LoRAMatrix) -> String { matrix == .a ? "lora_a" : "lora_b" }

    /// The block number of a module path and the path relative to that block: the first component that is a
    /// number is the block (`model.layers.3.self_attn.q_proj` → 3, `self_attn.q_proj`; `transformer.h.0.attn.c_attn`
    /// → 0, `attn.c_attn`); a path without one is outside every block (`lm_head` → nil, `lm_head`), which mlx-lm
    /// matches against the model's full module paths.
    static func blockKey(_ modulePath: String) -> (block: Int?, key: String) {
        let components = modulePath.split(separator: ".")
        guard let index = components.indices.first(where: { $0 > 0 && components[$0].allSatisfy(\.isNumber) }),
              index + 1 < components.count, let block = Int(components[index]) else {
            return (nil, modulePath)
        }
        return (block, components[(index + 1)...].joined(separator: "."))
    }

    /// `lora_parameters.keys`: each module's path relative to its block, deduplicated and sorted.
    public static func keys(_ modulePaths: [String]) -> [String] {
        Set(modulePaths.map { blockKey($0).key }).sorted()
    }

    /// `num_layers`: how many blocks, counted from the last, mlx-lm must wrap to reach the lowest adapted one,
    /// `layerCount − lowest adapted block`. Without `layerCount` (the model's number of blocks) the adapted
    /// blocks are taken to run to the model's last block (layerCount = highest adapted block + 1), which holds
    /// whenever every block is adapted; then it is the number of distinct blocks adapted. 0 when no module is in
    /// a block.
    static func numberOfLayers(_ modulePaths: [String], layerCount: Int?) -> Int {
        let blocks = modulePaths.compactMap { blockKey($0).block }
        guard let lowest = blocks.min(), let highest = blocks.max() else { return 0 }
        return (layerCount ?? highest + 1) - lowest
    }

    /// `adapter_config.json`, mlx-lm's keys verbatim: the LoRA hyper-parameters and, when given, `keys`.
    public struct Configuration: Codable, Sendable {
        public struct Parameters: Codable, Sendable {
            public var rank: Int?
            public var scale: Double?
            public var dropout: Double?
            public var keys: [String]?

            init(rank: Int, scale: Double, dropout: Double, keys: [String]) {
                (self.rank, self.scale, self.dropout, self.keys) = (rank, scale, dropout, keys)
            }

            enum CodingKeys: String, CodingKey { case rank, scale, dropout, keys }

            public init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                rank = try container.field(.rank, "a positive integer")
                scale = try container.field(.scale, "a finite number")
                dropout = try container.field(.dropout, "a number in [0, 1)")
                keys = try container.field(.keys, "a list of strings")
            }
        }

        public var fineTuneType: String?
        public var useDoRA: Bool?
        public var numLayers: Int?
        public var loraParameters: Parameters?

        enum CodingKeys: String, CodingKey {
            case fineTuneType = "fine_tune_type", useDoRA = "use_dora", numLayers = "num_layers", loraParameters = "lora_parameters"
        }

        init(fineTuneType: String, numLayers: Int, loraParameters: Parameters) {
            (self.fineTuneType, self.numLayers, self.loraParameters) = (fineTuneType, numLayers, loraParameters)
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            fineTuneType = try container.field(.fineTuneType, "a string")
            useDoRA = try? container.decodeIfPresent(Bool.self, forKey: .useDoRA)
            numLayers = try container.field(.numLayers, "an integer")
            do {
                loraParameters = try container.decodeIfPresent(Parameters.self, forKey: .loraParameters)
            } catch let problem as AdapterConfigurationProblem {
                throw AdapterConfigurationProblem("lora_parameters " + problem.reason)
            } catch {
                throw AdapterConfigurationProblem("\"lora_parameters\" is not an object")
            }
        }
    }

    public static func loraConfiguration(_ object: Configuration) throws(AdapterConfigurationProblem) -> LoRAConfiguration {
        func invalid(_ reason: String) -> AdapterConfigurationProblem { AdapterConfigurationProblem(reason) }
        func unsupported(_ reason: String) -> AdapterConfigurationProblem { AdapterConfigurationProblem(reason, unsupported: true) }
        // load_adapters reads a missing fine_tune_type as "lora"; mlx-lm before fine_tune_type had use_dora.
        switch object.fineTuneType ?? "lora" {
        case "lora": break
        case "dora":
            throw unsupported("fine_tune_type is \"dora\": DoRA adds a magnitude vector and normalises the adapted weight, "
                + "which this project does not implement")
        case "full":
            throw unsupported("fine_tune_type is \"full\": adapters.safetensors holds whole fine-tuned weights, not LoRA matrices")
        case let other:
            throw unsupported("fine_tune_type is \"\(other)\"; only \"lora\" adapters (lora_a, lora_b) can be loaded")
        }
        if object.useDoRA == true { throw unsupported("use_dora is true: DoRA is not implemented") }
        guard let parameters = object.loraParameters else {
            throw invalid("no \"lora_parameters\" object (mlx-lm reads rank, scale and dropout from it)")
        }
        guard let rank = parameters.rank, rank > 0 else { throw invalid("lora_parameters \"rank\" is not a positive integer") }
        guard let scale = parameters.scale, scale.isFinite else { throw invalid("lora_parameters \"scale\" is not a finite number") }
        let dropout = parameters.dropout ?? 0
        guard (0..<1).contains(dropout) else { throw invalid("lora_parameters \"dropout\" is not a number in [0, 1)") }
        // MLX keeps only the scale: alpha = scale · r makes `LoRAConfiguration.scale` MLX's.
        return LoRAConfiguration(rank: rank, alpha: scale * Double(rank), dropout: dropout, useRSLoRA: false)
    }

    /// mlx-lm applies a module only when its block-relative path is in `lora_parameters.keys`; one it would ignore
    /// is refused rather than silently applied here.
    public static func check(modulePath: String, key: String, configuration: Configuration) throws(AdapterConfigurationProblem) {
        let relative = blockKey(modulePath).key
        if let keys = configuration.loraParameters?.keys, !keys.contains(relative) {
            throw AdapterConfigurationProblem("lora_parameters \"keys\" does not list '\(relative)', "
                + "so mlx-lm would not apply '\(key)' (keys: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    /// `scale = configuration.scale` (rsLoRA's `alpha/√r` included: MLX keeps only the scale); `num_layers` from
    /// `context.layerCount` (see `numberOfLayers`).
    public static func configuration(for adapter: LoRAAdapter, context: AdapterSaveContext) throws -> Configuration {
        let modulePaths = adapter.modules.map(\.modulePath)
        if let layerCount = context.layerCount, let highest = modulePaths.compactMap({ blockKey($0).block }).max(), layerCount <= highest {
            throw AdapterConfigurationProblem("layerCount \(layerCount) is not above the highest adapted block, \(highest)")
        }
        let parameters = Configuration.Parameters(rank: adapter.configuration.rank, scale: adapter.configuration.scale,
                                                  dropout: adapter.configuration.dropout, keys: keys(modulePaths))
        return Configuration(fineTuneType: "lora", numLayers: numberOfLayers(modulePaths, layerCount: context.layerCount),
                             loraParameters: parameters)
    }
}
