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
public enum MLXAdapter {
    /// The file names inside an adapter folder.
    public static let weightsFileName = "adapters.safetensors"
    public static let configurationFileName = "adapter_config.json"

    static let aSuffix = ".lora_a"
    static let bSuffix = ".lora_b"

    /// `<module path>.lora_a`.
    public static func aKey(_ modulePath: String) -> String { modulePath + aSuffix }
    /// `<module path>.lora_b`.
    public static func bKey(_ modulePath: String) -> String { modulePath + bSuffix }

    /// The one conversion between PEFT's orientation and MLX's: the transpose of a matrix, `[r, in]` ↔ `[in, r]`
    /// for A and `[out, r]` ↔ `[r, out]` for B. A transpose is its own inverse, so saving and loading both use it.
    static func convertingOrientation(_ matrix: Tensor) -> Tensor {
        precondition(matrix.rank == 2 && matrix.storage.kind == .float, "a LoRA matrix is a 2-D float tensor")
        let rows = matrix.shape[0], columns = matrix.shape[1]
        let values = matrix.floats
        var transposed = [Float](repeating: 0, count: values.count)
        for row in 0..<rows {
            for column in 0..<columns { transposed[column * rows + row] = values[row * columns + column] }
        }
        return Tensor(shape: [columns, rows], floats: transposed)
    }

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

    /// `adapter_config.json` for `configuration`: the keys mlx-lm's `load_adapters` reads, sorted, four-space
    /// indent as mlx-lm's `save_config` writes.
    static func configurationJSON(_ configuration: LoRAConfiguration, modulePaths: [String], layerCount: Int?) -> String {
        let keys = keys(modulePaths)
        let keysText = keys.isEmpty ? "[]"
            : "[\n" + keys.map { "            " + jsonString($0) }.joined(separator: ",\n") + "\n        ]"
        return """
            {
                "fine_tune_type": "lora",
                "lora_parameters": {
                    "dropout": \(configuration.dropout),
                    "keys": \(keysText),
                    "rank": \(configuration.rank),
                    "scale": \(configuration.scale)
                },
                "num_layers": \(numberOfLayers(modulePaths, layerCount: layerCount))
            }

            """
    }

    /// What `adapter_config.json` says: the LoRA hyper-parameters and, when given, `keys`.
    struct Configuration {
        var rank: Int
        var scale: Double
        var dropout: Double
        var keys: Set<String>?
    }

    /// Reads `adapter_config.json`, refusing what is not a plain LoRA adapter.
    static func configuration(from data: Data, path: String) throws -> Configuration {
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
        // load_adapters reads a missing fine_tune_type as "lora"; mlx-lm before fine_tune_type had use_dora.
        let fineTuneType = object["fine_tune_type"] ?? "lora"
        guard let fineTuneType = fineTuneType as? String else { throw invalid("\"fine_tune_type\" is not a string") }
        switch fineTuneType {
        case "lora": break
        case "dora":
            throw unsupported("fine_tune_type is \"dora\": DoRA adds a magnitude vector and normalises the adapted weight, "
                + "which this project does not implement")
        case "full":
            throw unsupported("fine_tune_type is \"full\": adapters.safetensors holds whole fine-tuned weights, not LoRA matrices")
        default:
            throw unsupported("fine_tune_type is \"\(fineTuneType)\"; only \"lora\" adapters (lora_a, lora_b) can be loaded")
        }
        if let dora = object["use_dora"], isJSONBoolean(dora), dora as? Bool == true {
            throw unsupported("use_dora is true: DoRA is not implemented")
        }
        if let layers = object["num_layers"], !(layers is NSNull), jsonInteger(layers) == nil {
            throw invalid("\"num_layers\" is not an integer")
        }
        guard let parameters = object["lora_parameters"] as? [String: Any] else {
            throw invalid("no \"lora_parameters\" object (mlx-lm reads rank, scale and dropout from it)")
        }
        guard let rank = jsonInteger(parameters["rank"]), rank > 0 else {
            throw invalid("lora_parameters \"rank\" is not a positive integer")
        }
        guard let scale = jsonNumber(parameters["scale"]), scale.isFinite else {
            throw invalid("lora_parameters \"scale\" is not a finite number")
        }
        var dropout = 0.0
        if let value = parameters["dropout"], !(value is NSNull) {
            guard let number = jsonNumber(value), (0..<1).contains(number) else {
                throw invalid("lora_parameters \"dropout\" is not a number in [0, 1)")
            }
            dropout = number
        }
        var keys: Set<String>?
        if let value = parameters["keys"], !(value is NSNull) {
            guard let list = value as? [String] else { throw invalid("lora_parameters \"keys\" is not a list of strings") }
            keys = Set(list)
        }
        return Configuration(rank: rank, scale: scale, dropout: dropout, keys: keys)
    }
}

extension LoRAAdapter {
    /// Saves this adapter as an mlx-lm adapter folder `directory` (created if needed), each file written
    /// atomically: `adapters.safetensors` with float32 `lora_a = Aᵀ` `[in, r]` and `lora_b = Bᵀ` `[r, out]` per
    /// module (`__metadata__` `{"format": "mlx"}`, as `mx.save_safetensors` writes) and `adapter_config.json`
    /// with `scale = configuration.scale` (rsLoRA's `alpha/√r` included: MLX keeps only the scale).
    /// `layerCount`, the model's number of transformer blocks, sets `num_layers` (see
    /// `MLXAdapter.numberOfLayers`); leave it nil when every block is adapted.
    public func saveMLX(to directory: String, layerCount: Int? = nil) throws {
        let modulePaths = modules.map(\.modulePath)
        if let layerCount, let highest = modulePaths.compactMap({ MLXAdapter.blockKey($0).block }).max(), layerCount <= highest {
            throw AdapterError.cannotWrite(path: directory, reason:
                "layerCount \(layerCount) is not above the highest adapted block, \(highest)")
        }
        let rank = configuration.rank
        var tensors: [(name: String, tensor: Tensor)] = []
        for module in modules {
            guard let a = a[module.modulePath], let b = b[module.modulePath], a.storage.kind == .float, b.storage.kind == .float,
                  a.shape == [rank, module.inFeatures], b.shape == [module.outFeatures, rank] else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter has no float A [\(rank), \(module.inFeatures)] "
                    + "and B [\(module.outFeatures), \(rank)] for \(module.modulePath)")
            }
            tensors.append((MLXAdapter.aKey(module.modulePath), MLXAdapter.convertingOrientation(a)))
            tensors.append((MLXAdapter.bKey(module.modulePath), MLXAdapter.convertingOrientation(b)))
        }
        let json = MLXAdapter.configurationJSON(configuration, modulePaths: modulePaths, layerCount: layerCount)
        try AdapterFolder.write(directory, weights: tensors, metadata: ["format": "mlx"], weightsFileName: MLXAdapter.weightsFileName,
                                configuration: json, configurationFileName: MLXAdapter.configurationFileName)
    }

    /// Loads the mlx-lm adapter folder `directory` for `modules` (the model's, from `LoRAModule.modules`): every
    /// key must be `<module path>.lora_a` or `.lora_b` of one of `modules`, every module must have both, shaped
    /// `[in, r]` and `[r, out]` with `r` the config's rank; a module whose block-relative path is not in
    /// `lora_parameters.keys` is refused (mlx-lm would ignore its weights); on a fused projection the columns of
    /// `lora_b` for output features the module does not adapt must be zero. The configuration is
    /// `rank`, `alpha = scale · rank` (so `.scale` is MLX's scale), `useRSLoRA` false and the config's dropout.
    public static func loadMLX(from directory: String, modules: [LoRAModule]) throws -> LoRAAdapter {
        let folder = try AdapterFolder.read(directory, configurationFileName: MLXAdapter.configurationFileName,
                                            weightsFileName: MLXAdapter.weightsFileName)
        let mlx = try MLXAdapter.configuration(from: folder.configuration, path: folder.configurationPath)
        let (file, weightsPath) = (folder.weights, folder.weightsPath)

        let byPath = Dictionary(modules.map { ($0.modulePath, $0) }, uniquingKeysWith: { first, _ in first })
        let rank = mlx.rank
        var a: [String: Tensor] = [:]
        var b: [String: Tensor] = [:]
        for (key, tensor) in file.tensors {
            let isA = key.hasSuffix(MLXAdapter.aSuffix), isB = key.hasSuffix(MLXAdapter.bSuffix)
            guard isA || isB else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason:
                    "'\(key)' is not an MLX LoRA weight (<module path>.lora_a or <module path>.lora_b)")
            }
            let modulePath = String(key.dropLast((isA ? MLXAdapter.aSuffix : MLXAdapter.bSuffix).count))
            guard let module = byPath[modulePath] else {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: modulePath, reason:
                    "is in the adapter ('\(key)') but not among the model's adapted modules "
                    + "(\(modules.map(\.modulePath).joined(separator: ", ")))")
            }
            let relative = MLXAdapter.blockKey(modulePath).key
            if let keys = mlx.keys, !keys.contains(relative) {
                throw AdapterError.invalidAdapter(path: folder.configurationPath, reason: "lora_parameters \"keys\" does not list '\(relative)', "
                    + "so mlx-lm would not apply '\(key)' (keys: \(keys.sorted().joined(separator: ", ")))")
            }
            guard tensor.storage.kind == .float, tensor.rank == 2 else {
                throw AdapterError.invalidAdapter(path: weightsPath, reason: "'\(key)' is not a float matrix (\(tensor.dataType) \(tensor.shape))")
            }
            let expected = isA ? [module.inFeatures, rank] : [rank, module.outFeatures]
            guard tensor.shape == expected else {
                throw AdapterError.adapterShapeMismatch(path: weightsPath, key: key, expected: expected, actual: tensor.shape)
            }
            let peft = MLXAdapter.convertingOrientation(Tensor(shape: tensor.shape, floats: tensor.floats))
            if isA { a[modulePath] = peft } else { b[modulePath] = peft }
        }
        for module in modules {
            for (tensors, key) in [(a, MLXAdapter.aKey(module.modulePath)), (b, MLXAdapter.bKey(module.modulePath))]
            where tensors[module.modulePath] == nil {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath,
                                                          reason: "is adapted in the model but the adapter has no '\(key)'")
            }
            let trainable = Set(module.trainableOutputs)
            let rows = b[module.modulePath]!.floats
            if let row = (0..<module.outFeatures).first(where: { row in
                !trainable.contains(row) && rows[(row * rank)..<((row + 1) * rank)].contains { $0 != 0 }
            }) {
                throw AdapterError.adapterModuleMismatch(path: weightsPath, module: module.modulePath, reason:
                    "has nonzero lora_b columns for output features this model does not adapt (first: \(row)); the model "
                    + "adapts only \(module.targets.map(\.kind.rawValue).joined(separator: ", ")) of this fused projection")
            }
        }
        let configuration = LoRAConfiguration(rank: rank, alpha: mlx.scale * Double(rank), dropout: mlx.dropout,
                                              useRSLoRA: false)
        return LoRAAdapter(configuration: configuration, modules: modules, a: a, b: b)
    }
}
