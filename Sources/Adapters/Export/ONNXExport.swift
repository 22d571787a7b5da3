import Foundation
import ONNXGraph

/// How an adapter is written into an ONNX model.
public enum ONNXExportForm: String, Sendable, CaseIterable, Codable {
    /// `W' = W + scale·ΔW` written into each adapted weight, in its own orientation and data type; the graph is
    /// otherwise the input's, byte for byte.
    case merged
    /// LoRA kept as nodes after each adapted projection (`MatMul` by Aᵀ, `MatMul` by Bᵀ, `Mul` by the scale,
    /// `Add`), Aᵀ, Bᵀ and the scale as initializers.
    case loraNodes = "lora-nodes"
    /// The same nodes without the `Mul`; Aᵀ `[in, r]` and `scale·Bᵀ` `[r, out]` are graph inputs with a dynamic
    /// rank `lora_rank` (defaulting to rank-0 initializers, which give the base model), their values in an
    /// onnxruntime `.onnx_adapter` file beside the model, so a runtime (onnxruntime's `LoraAdapter`,
    /// onnxruntime-genai) can switch adapters without reloading the model.
    case loraInputs = "lora-inputs"
}

/// What `ONNXExport.write` wrote.
public struct ONNXExportReport: Sendable, Encodable {
    public var output: String
    /// The external data file beside the output, nil when every tensor is inline.
    public var dataFile: String?
    /// The `.onnx_adapter` file (form `lora-inputs`).
    public var adapterFile: String?
    public var form: ONNXExportForm
    /// Adapted module paths, in graph order.
    public var modules: [String]
    /// Weights merged in place (form `merged`).
    public var mergedWeights: [String]
    /// `weight -> copy` for weights another node also reads (tied embeddings, deduplicated initializers): the
    /// adapted projection reads a merged copy, the other readers keep the original.
    public var copiedWeights: [String]
    /// MatMulNBits weights merged and re-quantised (form `merged` on an int4/int8 base), with the re-quantisation
    /// error.
    public var requantized: [RequantizedWeight] = []
    /// Files carried from the input model's folder into the output's (onnxruntime-genai's `genai_config.json`, the
    /// tokenizer files), so that the output folder runs as the input's did.
    public var carriedFiles: [String] = []
    /// ONNX 1.12's checker on the output: `passed`, or `skipped: <why>`.
    public var checker: String
    /// The `metadata_props` entry recorded (`ONNXExport.provenanceKey`).
    public var provenance: String
}

/// One MatMulNBits weight merged and re-quantised by `ONNXExport` (form `merged`).
public struct RequantizedWeight: Sendable, Codable, Equatable {
    /// The B initializer (its merged copy's source when the weight is shared).
    public var weight: String
    public var modules: [String]
    public var bits: Int
    public var blockSize: Int
    /// True without zero points (`2^(bits−1)`), false with the node's own.
    public var symmetric: Bool
    /// Output features re-quantised (those the adapter changes; the others keep their bytes).
    public var outputFeatures: Int
    /// `(re-quantised − merged fp32) / scale` over the re-quantised values: max |·| and RMS.
    public var error: RequantizationError
}

/// Writes a model with an adapter applied back into the model's own graph (see `ONNXExportForm`), through
/// `ModelEditor`, so that everything the export does not change is kept as the input had it.
public enum ONNXExport {
    /// The model `metadata_props` key holding the export's provenance (JSON).
    public static let provenanceKey = "onnx_dpo.provenance"
    /// The scalar initializer multiplying every update in form `lora-nodes`.
    public static let scaleName = "lora_scale"
    /// The symbolic rank dimension of the adapter inputs in form `lora-inputs`.
    public static let rankDimension = "lora_rank"

    /// Name of module `path`'s Aᵀ `[in, r]` (an initializer or a graph input, and the key in `.onnx_adapter`).
    public static func aName(_ path: String) -> String { "\(path).lora_A" }
    /// Name of module `path`'s Bᵀ `[r, out]` (`scale·Bᵀ` in form `lora-inputs`).
    public static func bName(_ path: String) -> String { "\(path).lora_B" }

    /// Writes `model` with `adapter` applied as `form` to `path` (its external data, when the input has some, to
    /// `<path>.data`; form `lora-inputs` also writes `adapterFile`, by default `<path without .onnx>.onnx_adapter`).
    /// With no adapter the model is written unchanged (every tensor bit for bit) apart from the provenance entry.
    /// `adapterSource` (the adapter folder read) only goes into the provenance. Never writes over the input; every
    /// file is written to a temporary name and renamed.
    public static func write(
        model: Model, adapter: LoRAAdapter?, form: ONNXExportForm, to path: String, adapterFile: String? = nil,
        adapterSource: String? = nil
    ) throws -> ONNXExportReport {
        let lock = try OutputLock.file(path)
        defer { lock.release() }
        let editor = ModelEditor(model)
        let index = GraphIndex(model: model)
        let modules = (adapter?.modules ?? []).map { (nodeIndex(of: $0, in: model), $0) }.sorted { $0.0 < $1.0 }.map(\.1)
        var report = ONNXExportReport(output: path, form: form, modules: modules.map(\.modulePath), mergedWeights: [],
                                      copiedWeights: [], checker: "", provenance: "")
        var adapterParameters: [(name: String, tensor: Tensor)] = []
        if let adapter {
            switch form {
            case .merged:
                try merge(adapter, modules: modules, model: model, index: index, editor: editor, report: &report)
            case .loraNodes, .loraInputs:
                adapterParameters = try attach(adapter, modules: modules, form: form, model: model, editor: editor)
            }
        }
        var adapterOutput: String?
        if form == .loraInputs {
            guard adapter != nil else {
                throw AdapterError.invalidOption(option: "form", reason: "lora-inputs needs an adapter")
            }
            adapterOutput = adapterFile ?? defaultAdapterFile(for: path)
        }
        // Read now, written last: a side file that cannot be read refuses the export before anything is written.
        let runtimeFiles = try RuntimeFolder.files(model: model.path, output: path)
        let provenance = try Provenance.json(model: model, adapter: adapter, adapterSource: adapterSource, form: form)
        editor.setMetadata(provenanceKey, provenance)
        report.provenance = provenance

        // The adapter file first, so that the model is not written without it; it is removed again if the model
        // cannot be written or fails its check.
        if let adapterOutput {
            let standardized = { (path: String) in URL(fileURLWithPath: path).standardizedFileURL.path }
            if ModelEditor.sameFile(adapterOutput, model.path) || ModelEditor.sameFile(adapterOutput, path)
                || standardized(adapterOutput) == standardized(path) {
                throw AdapterError.cannotWrite(path: adapterOutput, reason: "it is the input or the output model")
            }
            try ONNXAdapterFile.write(.init(parameters: adapterParameters, adapterVersion: 1, modelVersion: 1), to: adapterOutput)
            report.adapterFile = adapterOutput
        }
        do {
            let written = try editor.write(to: path)
            report.dataFile = written.dataPath
            var carried: [String] = []
            do {
                report.checker = try checkWritten(path)
                let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
                for (name, data) in runtimeFiles {
                    let destination = folder.appendingPathComponent(name).path
                    try AtomicFile.write(data, to: destination)
                    carried.append(destination)
                }
                report.carriedFiles = carried
            } catch {
                unlink(path)
                if let data = written.dataPath { unlink(data) }
                for file in carried { unlink(file) }
                throw error
            }
        } catch {
            if let adapterOutput { unlink(adapterOutput) }
            throw error
        }
        return report
    }

    /// `out.onnx` -> `out.onnx_adapter`.
    public static func defaultAdapterFile(for modelPath: String) -> String {
        (modelPath.hasSuffix(".onnx") ? String(modelPath.dropLast(5)) : modelPath) + "." + ONNXAdapterFile.fileExtension
    }

    private static func nodeIndex(of module: LoRAModule, in model: Model) -> Int {
        model.graph.nodes.firstIndex { $0.label == module.node || $0.name == module.node } ?? Int.max
    }

    // MARK: - Merged

    private static func merge(
        _ adapter: LoRAAdapter, modules: [LoRAModule], model: Model, index: GraphIndex, editor: ModelEditor,
        report: inout ONNXExportReport
    ) throws {
        var names = FreshNames(model: model)
        // Modules of one projection (q and v parts of a packed qkv) are merged into its weight together.
        var groups: [(position: Int, modules: [LoRAModule])] = []
        for module in modules {
            let position = nodeIndex(of: module, in: model)
            guard position < model.graph.nodes.count else {
                throw AdapterError.loraTargetsNotFound(model: model.path, reason: "node \(module.node) of \(module.modulePath) is not in the graph")
            }
            if let group = groups.firstIndex(where: { $0.position == position }) {
                groups[group].modules.append(module)
            } else {
                groups.append((position, [module]))
            }
        }
        for (position, group) in groups {
            let node = model.graph.nodes[position]
            let paths = group.map(\.modulePath).joined(separator: ", ")
            if let quantized = group.first(where: { $0.targets.first?.layout.storage == .matMulInteger }) {
                let type = index.initializers[quantized.weight].map { "\($0.dataType)" } ?? "quantised"
                throw AdapterError.unsupportedAdapter(path: model.path, reason:
                    "the weight '\(quantized.weight)' of \(quantized.modulePath) is \(type) (a dynamically quantised MatMul); merging "
                    + "into quantised weights is not supported: export with --form lora-nodes or lora-inputs")
            }
            guard let module = group.first, group.allSatisfy({ $0.weight == module.weight }),
                  let slot = node.inputs.indices.dropFirst().first(where: { index.initializer(behind: node.inputs[$0])?.name == module.weight }),
                  let initializer = index.initializers[module.weight] else {
                throw AdapterError.loraTargetsNotFound(model: model.path,
                    reason: "\(node.opType) node \(node.label) of \(paths) does not read the weight '\(group[0].weight)'")
            }
            if module.targets.first?.layout.isQuantized == true {
                try mergeQuantized(adapter, modules: group, node: node, position: position, model: model, index: index,
                                   editor: editor, names: &names, report: &report)
                continue
            }
            guard [.float, .float16, .bfloat16].contains(initializer.dataType) else {
                throw AdapterError.unsupportedAdapter(path: model.path, reason:
                    "the weight '\(initializer.name)' of \(paths) is \(initializer.dataType); merging supports float32, float16 and bfloat16 weights and MatMulNBits")
            }
            var merged = try model.loadTensor(initializer)
            for module in group { merged = try adapter.merged(merged, module: module) }
            guard let raw = TensorEncoding.raw(merged.floats, as: initializer.dataType) else {
                preconditionFailure("float32, float16 and bfloat16 are encodable")
            }
            try write(raw, into: initializer, slot: slot, of: node, position: position, label: paths, index: index,
                      editor: editor, names: &names, report: &report)
        }
    }

    /// Writes `raw` as the new values of `initializer`, which input `slot` of `node` reads. The weight may be read
    /// elsewhere too: a tied embedding (one initializer feeding a Gather, or GatherBlockQuantized, and this projection),
    /// an initializer the exporter deduplicated, or the projection reading it through an Identity. Then only this
    /// projection may see the merged values: it gets its own copy.
    private static func write(
        _ raw: [UInt8], into initializer: Initializer, slot: Int, of node: Node, position: Int, label: String,
        index: GraphIndex, editor: ModelEditor, names: inout FreshNames, report: inout ONNXExportReport
    ) throws {
        let soleReader = node.inputs[slot] == initializer.name && index.consumers[initializer.name] == [node.index]
            && !index.isGraphOutput(initializer.name)
        if soleReader {
            try editor.replaceValues(ofInitializer: initializer.name, raw: raw)
            report.mergedWeights.append(initializer.name)
        } else {
            let copy = names.make("\(initializer.name)/merged/\(label)")
            try editor.addInitializer(name: copy, dataType: initializer.dataType, shape: initializer.shape, raw: raw)
            editor.setInput(ofNodeAt: position, slot: slot, to: copy)
            report.copiedWeights.append("\(initializer.name) -> \(copy)")
        }
    }

    /// Merges into a MatMulNBits weight: dequantised to fp32, `W + scale·ΔW` added there, and the output features the
    /// adapter changes re-quantised with the node's own bits, block size and zero-point scheme (`BlockQuantizedWeight`),
    /// written back as B, scales and zero points in the node's layout; the others keep their exact bytes.
    private static func mergeQuantized(
        _ adapter: LoRAAdapter, modules: [LoRAModule], node: Node, position: Int, model: Model, index: GraphIndex,
        editor: ModelEditor, names: inout FreshNames, report: inout ONNXExportReport
    ) throws {
        let label = modules.map(\.modulePath).joined(separator: ", ")
        func input(_ slot: Int) throws -> Initializer? {
            guard slot < node.inputs.count, !node.inputs[slot].isEmpty else { return nil }
            guard let initializer = index.initializer(behind: node.inputs[slot]) else {
                throw AdapterError.unsupportedAdapter(path: model.path, reason:
                    "MatMulNBits node \(node.label) of \(label): input \(slot) '\(node.inputs[slot])' is computed, not an initializer, so it cannot be merged into")
            }
            return initializer
        }
        guard let packed = try input(1), let scales = try input(2) else {
            throw AdapterError.unsupportedAdapter(path: model.path, reason: "MatMulNBits node \(node.label) of \(label) has no B or scales")
        }
        let zeroPoints = try input(3)
        var weight = try BlockQuantizedWeight(node: node, packed: try model.loadTensor(packed), scales: try model.loadTensor(scales),
                                              zeroPoints: try zeroPoints.map { try model.loadTensor($0) }, modelPath: model.path)
        let (rows, columns) = (weight.outFeatures, weight.inFeatures)
        var merged = Tensor(shape: [rows, columns], floats: weight.dequantized())
        var changed = Set<Int>()
        for module in modules {
            guard module.inFeatures == columns, module.storedOutFeatures == rows, let b = adapter.b[module.modulePath]?.floats else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter of \(module.modulePath) does not fit MatMulNBits node \(node.label) [K \(columns), N \(rows)]")
            }
            merged = try adapter.merged(merged, module: module)
            let rank = adapter.configuration.rank
            for row in module.trainableOutputs where b[(row * rank)..<((row + 1) * rank)].contains(where: { $0 != 0 }) {
                changed.insert(module.storedOutput(ofRow: row))
            }
        }
        let error = weight.requantize(rows: changed.sorted(), from: merged.floats)
        try write(rawUInt8(weight.codes), into: packed, slot: 1, of: node, position: position, label: label, index: index,
                  editor: editor, names: &names, report: &report)
        try write(weight.scalesRaw, into: scales, slot: 2, of: node, position: position, label: label, index: index,
                  editor: editor, names: &names, report: &report)
        if let zeroPoints, let raw = weight.zeroPointsRaw(zeroPoints.dataType) {
            try write(raw, into: zeroPoints, slot: 3, of: node, position: position, label: label, index: index,
                      editor: editor, names: &names, report: &report)
        }
        report.requantized.append(RequantizedWeight(
            weight: packed.name, modules: modules.map(\.modulePath), bits: weight.bits, blockSize: weight.blockSize,
            symmetric: zeroPoints == nil, outputFeatures: changed.count, error: error))
    }

    // MARK: - LoRA as nodes

    /// Adds the LoRA nodes (and, for `lora-nodes`, the initializers; for `lora-inputs`, the graph inputs) and
    /// returns the tensors of an `.onnx_adapter` file (empty for `lora-nodes`).
    private static func attach(
        _ adapter: LoRAAdapter, modules: [LoRAModule], form: ONNXExportForm, model: Model, editor: ModelEditor
    ) throws -> [(name: String, tensor: Tensor)] {
        let dataType = try adapterDataType(modules: modules, model: model)
        let attachments = try LoRAAttachment.plan(
            model: model, modules: modules, aName: aName, bName: bName,
            scale: form == .loraNodes ? scaleName : nil, dropoutMask: nil)
        var parameters: [(name: String, tensor: Tensor)] = []
        switch form {
        case .loraNodes:
            try editor.addInitializer(name: scaleName, dataType: dataType, shape: [],
                                      raw: TensorEncoding.raw([Float(adapter.configuration.scale)], as: dataType)!)
            for (name, tensor) in try transposedPairs(adapter, modules: modules, scaled: false) {
                try editor.addInitializer(name: name, dataType: dataType, shape: tensor.shape,
                                          raw: TensorEncoding.raw(tensor.floats, as: dataType)!)
            }
        case .loraInputs, .merged:
            guard model.irVersion >= 4 else {
                throw AdapterError.unsupportedAdapter(path: model.path, reason:
                    "form lora-inputs gives each adapter input a default initializer, which IR \(model.irVersion) (before IR 4) does not allow")
            }
            parameters = try adapterParameters(adapter, model: model, modules: modules)
            // Each input also gets a rank-0 initializer of the same name as its default (IR ≥ 4 lets inputs
            // override initializers): with no adapter active the update is empty and the model is the base model,
            // and runtimes that require every input without a default to be fed (onnxruntime's Python API) accept
            // a run with only the adapter's values.
            for module in modules {
                editor.addGraphInput(ValueInfo(name: aName(module.modulePath), elementType: dataType,
                                               shape: [.fixed(module.inFeatures), .symbolic(rankDimension)]))
                editor.addGraphInput(ValueInfo(name: bName(module.modulePath), elementType: dataType,
                                               shape: [.symbolic(rankDimension), .fixed(module.outFeatures)]))
                try editor.addInitializer(name: aName(module.modulePath), dataType: dataType, shape: [module.inFeatures, 0], raw: [])
                try editor.addInitializer(name: bName(module.modulePath), dataType: dataType, shape: [0, module.outFeatures], raw: [])
            }
        }
        for attachment in attachments {
            for (name, tensor) in attachment.constants {
                let raw = tensor.int64s.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
                try editor.addInitializer(name: name, dataType: .int64, shape: tensor.shape, raw: raw)
            }
        }
        // Back to front, so that each attachment's node index still points at its projection.
        for attachment in attachments.sorted(by: { $0.nodeIndex > $1.nodeIndex }) {
            editor.setOutput(ofNodeAt: attachment.nodeIndex, slot: 0, to: attachment.projectionOutput)
            for (offset, node) in attachment.nodes.enumerated() {
                editor.insertNode(node, at: attachment.nodeIndex + 1 + offset)
            }
        }
        return parameters
    }

    /// The tensors of the `.onnx_adapter` file that feeds a `lora-inputs` export of `model`: Aᵀ `[in, r]` and
    /// `scale·Bᵀ` `[r, out]` per module, named `aName`/`bName`, in the adapted weights' data type (so that the
    /// MatMuls type-check in a float16 or bfloat16 model). The scale is folded into B because adapters switched at
    /// run time may each have their own.
    public static func adapterParameters(
        _ adapter: LoRAAdapter, model: Model, modules: [LoRAModule]? = nil
    ) throws -> [(name: String, tensor: Tensor)] {
        let modules = modules ?? adapter.modules
        let dataType = try adapterDataType(modules: modules, model: model)
        return try transposedPairs(adapter, modules: modules, scaled: true).map { name, tensor in
            (name, Tensor(shape: tensor.shape, floats: tensor.floats, dataType: dataType))
        }
    }

    /// Aᵀ and Bᵀ (times the scale when `scaled`) per module, as (name, float32 tensor).
    private static func transposedPairs(_ adapter: LoRAAdapter, modules: [LoRAModule], scaled: Bool) throws -> [(String, Tensor)] {
        let scale = Float(adapter.configuration.scale)
        return try modules.flatMap { module -> [(String, Tensor)] in
            guard let a = adapter.a[module.modulePath], let b = adapter.b[module.modulePath] else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter has no A or B for \(module.modulePath)")
            }
            var bT = transposed(b)
            if scaled { bT = Tensor(shape: bT.shape, floats: bT.floats.map { $0 * scale }) }
            return [(aName(module.modulePath), transposed(a)), (bName(module.modulePath), bT)]
        }
    }

    /// The one floating-point type of the adapted weights, which the LoRA nodes' tensors must share. A quantised
    /// weight (MatMulNBits) counts as the type of its scales, which is its activations' type; a dynamically quantised
    /// one as float32.
    private static func adapterDataType(modules: [LoRAModule], model: Model) throws -> DataType {
        let types = Dictionary(model.graph.initializers.map { ($0.name, $0.dataType) }, uniquingKeysWith: { first, _ in first })
        let dataTypes = Set(modules.map { module -> DataType in
            // A dynamically quantised MatMul computes in float32 (DynamicQuantizeLinear reads float32 only).
            if module.targets.first?.layout.storage == .matMulInteger { return .float }
            guard module.targets.first?.layout.isQuantized == true,
                  let node = model.graph.nodes.first(where: { $0.name == module.node || $0.label == module.node }),
                  node.inputs.count > 2 else { return types[module.weight] ?? .float }
            return types[node.inputs[2]] ?? .float
        })
        guard dataTypes.count == 1, let dataType = dataTypes.first, [.float, .float16, .bfloat16].contains(dataType) else {
            throw AdapterError.unsupportedAdapter(path: model.path, reason:
                "the adapted weights are \(dataTypes.map(\.description).sorted().joined(separator: ", ")); LoRA nodes need one of float32, float16, bfloat16")
        }
        return dataType
    }

    // MARK: - Checks

    /// Reloads the written model (every tensor's size is checked against its shape) and runs ONNX 1.12's checker
    /// where the versions allow; a failure is a bug here, so the caller removes the output and throws.
    private static func checkWritten(_ path: String) throws -> String {
        let written = try Model.load(path: path)
        switch written.runONNXChecker() {
        case .passed: return "passed"
        case .skipped(let reason): return "skipped: \(reason)"
        case .failed(let message):
            throw AdapterError.cannotWrite(path: path, reason: "ONNX 1.12's checker rejects the written model: \(message)")
        }
    }
}
