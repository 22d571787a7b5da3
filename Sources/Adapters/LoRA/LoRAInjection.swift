import ONNXGraph

/// A model with LoRA adapters attached as ordinary ONNX nodes, ready for a `Session`:
///
///     y = x·W                 becomes          y = x·W + s · ((x · Aᵀ) · Bᵀ)
///
/// as `MatMul(x, Aᵀ) → MatMul(·, Bᵀ) → Mul(·, s) → Add(x·W, ·)` after each adapted projection, the projection's
/// output renamed so that every reader sees the sum. Aᵀ `[in, r]` and Bᵀ `[r, out]` are initializers (the
/// trainable values); `s` is one scalar initializer shared by all adapters, so that setting it to 0 gives the
/// base model (the DPO reference) from the same session and weights.
public struct AdaptedModel: Sendable {
    /// The rewritten model (its graph's nodes; initializers still read from the original file).
    public let model: Model
    /// The adapter values, keyed by initializer name: `additionalInitializers` for the session.
    public var initializers: [String: Tensor]
    public let modules: [LoRAModule]
    public let configuration: LoRAConfiguration
    /// The dropout mask graph inputs (none when `configuration.dropout` is 0) and the features each masks.
    public let dropoutMasks: [(name: String, features: Int)]

    /// The scalar initializer multiplying every adapter's output.
    public static let scaleName = "lora/scale"

    /// Initializer name of module `path`'s Aᵀ (`[in, r]`).
    public static func transposedAName(_ path: String) -> String { "lora/\(path)/A_transposed" }
    /// Initializer name of module `path`'s Bᵀ (`[r, out]`).
    public static func transposedBName(_ path: String) -> String { "lora/\(path)/B_transposed" }

    /// Graph input name of module `path`'s dropout mask (broadcast against the adapter's input `[..., in]`).
    public static func dropoutMaskName(_ path: String) -> String { "lora/\(path)/dropout_mask" }

    /// Feeds for the dropout masks: ones of shape `[1, in]` (no dropout: the reference, eval, or p = 0), or with a
    /// `generator`, fresh `Bernoulli(1 − p) / (1 − p)` masks shaped like the adapter inputs `[rows, tokens, in]`.
    public func dropoutFeeds(rows: Int, tokens: Int, generator: inout SeededGenerator?) -> [String: Tensor] {
        var feeds: [String: Tensor] = [:]
        let p = configuration.dropout
        for (name, features) in dropoutMasks {
            if generator == nil {
                feeds[name] = Tensor(shape: [1, features], floats: [Float](repeating: 1, count: features))
            } else {
                let keep = Float(1 / (1 - p))
                let values = (0..<(rows * tokens * features)).map { _ -> Float in
                    Double.random(in: 0..<1, using: &generator!) < p ? 0 : keep
                }
                feeds[name] = Tensor(shape: [rows, tokens, features], floats: values)
            }
        }
        return feeds
    }

    /// The names of the trainable values, Aᵀ and Bᵀ of every module.
    public var parameterNames: [String] {
        modules.flatMap { [Self.transposedAName($0.modulePath), Self.transposedBName($0.modulePath)] }
    }

    /// Attaches `adapter` to `model`. Throws when a module's node is missing or is a Gemm that transposes its
    /// input (`transA = 1`, which no exporter writes for a linear layer).
    public init(model: Model, adapter: LoRAAdapter) throws {
        var initializers: [String: Tensor] = [AdaptedModel.scaleName: Tensor(shape: [], floats: [Float(adapter.configuration.scale)])]
        for module in adapter.modules {
            guard let a = adapter.a[module.modulePath], let b = adapter.b[module.modulePath] else {
                throw AdapterError.inconsistentAdapter(reason: "the adapter has no A or B for \(module.modulePath)")
            }
            initializers[Self.transposedAName(module.modulePath)] = transposed(a)
            initializers[Self.transposedBName(module.modulePath)] = transposed(b)
        }
        let maskName: ((String) -> String)? = adapter.configuration.dropout > 0 ? { Self.dropoutMaskName($0) } : nil
        let attachments: [LoRAAttachment] = try LoRAAttachment.plan(
            model: model, modules: adapter.modules, aName: { Self.transposedAName($0) }, bName: { Self.transposedBName($0) },
            scale: Self.scaleName, dropoutMask: maskName)
        var nodes = model.graph.nodes
        // Back to front, so that each attachment's node index still points at its projection.
        for attachment in attachments.sorted(by: { $0.nodeIndex > $1.nodeIndex }) {
            nodes[attachment.nodeIndex].outputs[0] = attachment.projectionOutput
            nodes.insert(contentsOf: attachment.nodes, at: attachment.nodeIndex + 1)
        }
        for index in nodes.indices { nodes[index].index = index }
        for attachment in attachments {
            for (name, tensor) in attachment.constants { initializers[name] = tensor }
        }
        var rewritten = model
        rewritten.graph.nodes = nodes
        let dropoutMasks = attachments.flatMap { $0.dropoutMasks }
        for (name, _) in dropoutMasks {
            rewritten.graph.inputs.append(ValueInfo(name: name, elementType: .float, shape: nil))
        }
        self.dropoutMasks = dropoutMasks
        self.model = rewritten
        self.initializers = initializers
        self.modules = adapter.modules
        self.configuration = adapter.configuration
    }

    /// The adapter in PEFT's orientation from the current values (`initializers`, or a session's parameters).
    public func adapter(from values: [String: Tensor]) throws -> LoRAAdapter {
        var a: [String: Tensor] = [:], b: [String: Tensor] = [:]
        for module in modules {
            guard let aT = values[Self.transposedAName(module.modulePath)], let bT = values[Self.transposedBName(module.modulePath)] else {
                throw AdapterError.inconsistentAdapter(reason: "no values for the adapter of \(module.modulePath)")
            }
            a[module.modulePath] = transposed(aT)
            b[module.modulePath] = transposed(bT)
        }
        return LoRAAdapter(configuration: configuration, modules: modules, a: a, b: b)
    }

    /// Zeroes the gradient of Bᵀ's columns for frozen output features (a fused projection's k columns), so they
    /// stay zero whatever the optimiser does.
    public func maskFrozenOutputs(_ gradients: inout [String: Tensor]) {
        for module in modules where module.trainableOutputs.count < module.outFeatures {
            let name = Self.transposedBName(module.modulePath)
            guard var values = gradients[name]?.floats else { continue }
            let trainable = Set(module.trainableOutputs)
            let rank = values.count / module.outFeatures
            for row in 0..<rank {
                for column in 0..<module.outFeatures where !trainable.contains(column) {
                    values[row * module.outFeatures + column] = 0
                }
            }
            gradients[name] = Tensor(shape: [rank, module.outFeatures], floats: values)
        }
    }
}

/// The transpose of a 2-D float tensor (PEFT's orientation ↔ the `MatMul` operands of the adapted graph).
func transposed(_ matrix: Tensor) -> Tensor {
    let (rows, columns) = (matrix.shape[0], matrix.shape[1])
    let values = matrix.floats
    var result = [Float](repeating: 0, count: values.count)
    for row in 0..<rows {
        for column in 0..<columns { result[column * rows + row] = values[row * columns + column] }
    }
    return Tensor(shape: [columns, rows], floats: result, dataType: matrix.dataType)
}

/// How the LoRA modules of one projection are attached to it as ONNX nodes, the one place that rewrite is spelled
/// out (training's `AdaptedModel` and the exporter's LoRA-as-nodes forms both use it):
///
///     y = Proj(x, W)     becomes     y₀ = Proj(x, W);  y = y₀ + s · ((x ⊙ mask) · Aᵀ) · Bᵀ
///
/// as `[Mul(x, mask)] → MatMul(·, Aᵀ) → MatMul(·, Bᵀ) → [Mul(·, s)] → Add(y₀, ·)` right after the projection,
/// whose output is renamed to `y₀` so that every reader of `y` sees the sum. A module that adapts one part of a
/// packed projection (`LoRAModule.placement`, the columns `c₀..<c₁` of `n`) reads `Pad(Bᵀ)`, its `[r, part]` padded
/// with zero columns to `[r, n]` (pads `[0, c₀, 0, n − c₁]`), so the other parts' outputs are untouched; several
/// modules of one projection add their updates one after the other.
struct LoRAAttachment {
    /// The projection's index in the original graph.
    var nodeIndex: Int
    /// The projection's new output name (`y₀`); its old one is now the last `Add`'s.
    var projectionOutput: String
    /// The nodes to insert right after the projection, in order.
    var nodes: [Node]
    /// The dropout mask graph inputs and the features each masks, when dropout is attached.
    var dropoutMasks: [(name: String, features: Int)]
    /// Constant initializers the nodes read (the pads of a part module's `Pad`).
    var constants: [(name: String, tensor: Tensor)]

    /// The attachments of `modules`, one per projection node, in the order of the modules' first appearance.
    /// `aName`/`bName` name the Aᵀ `[in, r]` and Bᵀ `[r, out]` values the MatMuls read (initializers or graph
    /// inputs); `scale` names the scalar the update is multiplied by (nil: no `Mul`, the scale is folded into Bᵀ);
    /// `dropoutMask` names a mask graph input per module (nil: no dropout). Throws when a module's node is missing,
    /// is a Gemm with `transA = 1`, or a part module's output features are not one contiguous range.
    static func plan(
        model: Model, modules: [LoRAModule], aName: (String) -> String, bName: (String) -> String, scale: String?,
        dropoutMask: ((String) -> String)?
    ) throws -> [LoRAAttachment] {
        let nodes = model.graph.nodes
        // A dynamically quantised projection's adapter reads the float activation before its DynamicQuantizeLinear.
        let quantizedInputs = Dictionary(DynamicQuantizedMatMul.find(in: nodes).map { ($0.outputNode, $0.input) },
                                         uniquingKeysWith: { first, _ in first })
        var names = FreshNames(model: model)
        func fresh(_ base: String) -> String { names.make(base) }
        var attachments: [LoRAAttachment] = []
        for module in modules {
            guard let index = nodes.firstIndex(where: { $0.label == module.node || $0.name == module.node }) else {
                throw AdapterError.loraTargetsNotFound(model: model.path, reason: "node \(module.node) of \(module.modulePath) is not in the graph")
            }
            let node = nodes[index]
            if node.opType == "Gemm", (try? node.int("transA", default: 0)) != 0 {
                throw AdapterError.loraTargetsNotFound(model: model.path,
                    reason: "Gemm node \(node.label) transposes its input (transA = 1); LoRA cannot be attached there")
            }
            let output = node.outputs[0]
            let existing = attachments.firstIndex { $0.nodeIndex == index }
            var attachment = existing.map { attachments[$0] }
                ?? LoRAAttachment(nodeIndex: index, projectionOutput: fresh("\(output)/lora_base"), nodes: [],
                                  dropoutMasks: [], constants: [])
            // The value the update is added to: the projection's, or the sum with the previous module's update.
            var sum = attachment.projectionOutput
            if !attachment.nodes.isEmpty {
                sum = fresh("\(output)/lora_partial")
                attachment.nodes[attachment.nodes.count - 1].outputs[0] = sum
            }
            // Part modules share their projection, so their nodes are named by module as well.
            let prefix = "\(node.name.isEmpty ? module.modulePath : node.name)/lora"
                + (module.placement == nil ? "" : "/\(module.modulePath)")
            var adapterInput = quantizedInputs[index] ?? node.inputs[0]
            if let dropoutMask {
                // PEFT's per-module `lora_dropout` on the adapter's input: x ⊙ mask, the mask a graph input fed
                // with Bernoulli(1 − p) / (1 − p) values while training and ones otherwise.
                let name = dropoutMask(module.modulePath)
                let dropped = fresh("\(output)/lora_dropout")
                attachment.nodes.append(Node(name: "\(prefix)/dropout", opType: "Mul", inputs: [adapterInput, name], outputs: [dropped]))
                attachment.dropoutMasks.append((name, module.inFeatures))
                adapterInput = dropped
            }
            var up = bName(module.modulePath)
            if let placement = module.placement {
                guard let first = placement.first, let last = placement.last, last - first + 1 == placement.count else {
                    throw AdapterError.loraTargetsNotFound(model: model.path,
                        reason: "the output features of \(module.modulePath) on \(node.label) are not one contiguous range")
                }
                let pads = fresh("\(output)/lora_pads")
                attachment.constants.append((pads, Tensor(shape: [4], int64s: [0, Int64(first), 0, Int64(module.storedOutFeatures - last - 1)])))
                let padded = fresh("\(output)/lora_B_placed")
                attachment.nodes.append(Node(name: "\(prefix)/place", opType: "Pad", inputs: [up, pads], outputs: [padded]))
                up = padded
            }
            let down = fresh("\(output)/lora_down"), product = fresh("\(output)/lora_up")
            attachment.nodes.append(Node(name: "\(prefix)/down", opType: "MatMul", inputs: [adapterInput, aName(module.modulePath)], outputs: [down]))
            attachment.nodes.append(Node(name: "\(prefix)/up", opType: "MatMul", inputs: [down, up], outputs: [product]))
            var update = product
            if let scale {
                update = fresh("\(output)/lora_scaled")
                attachment.nodes.append(Node(name: "\(prefix)/scale", opType: "Mul", inputs: [product, scale], outputs: [update]))
            }
            attachment.nodes.append(Node(name: "\(prefix)/add", opType: "Add", inputs: [sum, update], outputs: [output]))
            if let existing { attachments[existing] = attachment } else { attachments.append(attachment) }
        }
        return attachments
    }
}
