import ONNXGraph

/// One scaled-dot-product attention: as exported graphs decompose it, `Softmax(Q·Kᵀ · scale + mask) · V`, or as
/// one attention op (`com.microsoft.GroupQueryAttention`, which onnxruntime-genai's builder writes;
/// `com.microsoft.MultiHeadAttention`, which onnxruntime's transformer optimizer writes; ONNX `Attention`, which torch's
/// dynamo exporter writes at opset 23).
struct AttentionBlock {
    /// The node the block was found from: its Softmax, or the attention op.
    var anchor: Node
    /// The query, key and value operands, in that order.
    var operands: [AttentionOperand]
    /// The attention's result, `probs·V` (heads still split for a decomposed attention; merged for an op).
    var output: String

    /// How messages name the block.
    var label: String { "\(anchor.opType) \(anchor.label)" }
}

/// One attention operand: the value read as the queries, keys or values, and the node reading it.
struct AttentionOperand {
    var kind: LoRATarget.Kind
    var value: String
    var reader: Node
    /// The positions of the value's last axis that hold this operand, when it shares the value with the others
    /// (GroupQueryAttention's packed `[.., (Nq + 2·Nkv)·H]` query input); nil when it is the whole value.
    var positions: Swift.Range<Int>?
}

/// Where one attention operand comes from: the linear layer whose output reaches it, and which of that
/// layer's output features do.
struct OperandSource {
    var projection: GraphIndex.Linear
    var columns: Set<Int>
    /// False when the columns are only an upper bound (see `ColumnProvenance.bounded`).
    var isExact: Bool
    /// Position by position, where known.
    var provenance: ColumnProvenance? = nil
}

/// Finds attention blocks and the projections feeding them, by structure only.
final class AttentionSearch {
    let index: GraphIndex
    /// Value -> indices of the linear layers its value flows from through `dataInputs` ops (memoised).
    private var reachCache: [String: Set<Int>] = [:]
    private var linearCache: [Int: GraphIndex.Linear?] = [:]

    init(index: GraphIndex) {
        self.index = index
    }

    func linear(_ nodeIndex: Int) -> GraphIndex.Linear? {
        if let cached = linearCache[nodeIndex] { return cached }
        let result = index.linear(index.node(nodeIndex))
        linearCache[nodeIndex] = result
        return result
    }

    // MARK: - Blocks

    /// Every Softmax whose input is computed from a MatMul of two activations (through scaling, a mask, a
    /// soft cap) and whose output is the left operand of another MatMul of activations, and every attention op,
    /// in graph order.
    func blocks() -> [AttentionBlock] {
        index.graph.nodes.compactMap { node in
            if let block = attentionOperator(node) { return block }
            guard node.opType == "Softmax", node.domain.isEmpty,
                  let scores = scoresMatMul(before: node.inputs[0]),
                  let output = outputMatMul(after: node.outputs[0]) else { return nil }
            return AttentionBlock(anchor: node, operands: [
                AttentionOperand(kind: .q, value: scores.inputs[0], reader: scores),
                AttentionOperand(kind: .k, value: scores.inputs[1], reader: scores),
                AttentionOperand(kind: .v, value: output.inputs[1], reader: output),
            ], output: output.outputs[0])
        }
    }

    /// An attention op as a block. `com.microsoft.MultiHeadAttention` and ONNX `Attention` (23, 24): query, key and
    /// value are their inputs 0, 1 and 2 (3D or per head; the search runs back through the Reshape / Transpose /
    /// rotary ops exporters put between them and the projections). `com.microsoft.GroupQueryAttention`: inputs 0, 1
    /// and 2, or, when key and value are omitted, the q, k and v column ranges of its packed input 0
    /// (`[.., (Nq + 2·Nkv)·H]`, q first), H found from the width of the projection computing it.
    private func attentionOperator(_ node: Node) -> AttentionBlock? {
        let separate = (node.opType == "MultiHeadAttention" && node.domain == "com.microsoft")
            || (node.opType == "Attention" && node.domain.isEmpty)
        if separate {
            guard node.inputs.count >= 3, node.inputs[0..<3].allSatisfy({ !$0.isEmpty }) else { return nil }
            return AttentionBlock(anchor: node, operands: [.q, .k, .v].enumerated().map {
                AttentionOperand(kind: $1, value: node.inputs[$0], reader: node)
            }, output: node.outputs[0])
        }
        guard node.opType == "GroupQueryAttention", node.domain == "com.microsoft", !node.inputs.isEmpty,
              let heads = try? node.int("num_heads", default: 0), let kvHeads = try? node.int("kv_num_heads", default: 0),
              heads > 0, kvHeads > 0 else { return nil }
        let packed = node.inputs.count < 3 || (node.inputs[1].isEmpty && node.inputs[2].isEmpty)
        guard packed else {
            return AttentionBlock(anchor: node, operands: [.q, .k, .v].enumerated().map {
                AttentionOperand(kind: $1, value: node.inputs[$0], reader: node)
            }, output: node.outputs[0])
        }
        guard let projection = reach(node.inputs[0]).first.flatMap({ linear($0) }),
              projection.outFeatures % (heads + 2 * kvHeads) == 0 else { return nil }
        let headSize = projection.outFeatures / (heads + 2 * kvHeads)
        let (q, kv) = (heads * headSize, kvHeads * headSize)
        return AttentionBlock(anchor: node, operands: [
            AttentionOperand(kind: .q, value: node.inputs[0], reader: node, positions: 0..<q),
            AttentionOperand(kind: .k, value: node.inputs[0], reader: node, positions: q..<(q + kv)),
            AttentionOperand(kind: .v, value: node.inputs[0], reader: node, positions: (q + kv)..<(q + 2 * kv)),
        ], output: node.outputs[0])
    }

    private func isActivationMatMul(_ node: Node) -> Bool {
        node.opType == "MatMul" && node.domain.isEmpty && node.inputs.count == 2
            && !index.isConstant(node.inputs[0]) && !index.isConstant(node.inputs[1])
    }

    /// The single `Q·Kᵀ` MatMul behind a Softmax input, or nil.
    private func scoresMatMul(before value: String) -> Node? {
        var found: [Int: Node] = [:]
        var stack = [(value, 0)]
        var seen = Set<String>()
        while let (current, depth) = stack.popLast() {
            guard depth < 16, seen.insert(current).inserted, let node = index.producerNode(of: current),
                  node.domain.isEmpty else { continue }
            if isActivationMatMul(node) {
                found[node.index] = node
                continue
            }
            let inputs: [Int]
            switch node.opType {
            case "Add", "Sub", "Mul", "Div", "Max", "Min": inputs = Array(node.inputs.indices)
            case "Where": inputs = [1, 2]
            case "Cast", "Identity", "Tanh", "Reshape", "Dropout": inputs = [0]
            default: inputs = []
            }
            for position in inputs where position < node.inputs.count && !node.inputs[position].isEmpty {
                stack.append((node.inputs[position], depth + 1))
            }
        }
        return found.count == 1 ? found.values.first : nil
    }

    /// The single MatMul that takes the attention probabilities as its left operand, or nil.
    private func outputMatMul(after value: String) -> Node? {
        var found: [Int: Node] = [:]
        var queue = [(value, 0)]
        var seen = Set<String>()
        while !queue.isEmpty {
            let (current, depth) = queue.removeFirst()
            guard depth < 8, seen.insert(current).inserted else { continue }
            for consumer in index.consumers[current] ?? [] {
                let node = index.node(consumer)
                guard node.domain.isEmpty else { continue }
                if isActivationMatMul(node) {
                    if node.inputs[0] == current { found[node.index] = node }
                    continue
                }
                switch node.opType {
                case "Cast", "Identity", "Dropout", "Reshape":
                    if node.inputs.first == current { queue.append((node.outputs[0], depth + 1)) }
                case "Where":
                    if node.inputs.dropFirst().contains(current) { queue.append((node.outputs[0], depth + 1)) }
                default:
                    break
                }
            }
        }
        return found.count == 1 ? found.values.first : nil
    }

    // MARK: - Operands

    /// Indices of the linear layers whose outputs flow into `value`, stopping at the first linear layer on
    /// each path and at any op that is not a reshaping, slicing, elementwise or concatenating one (so rotary
    /// cos/sin tables, masks and shapes lead nowhere).
    func reach(_ value: String) -> Set<Int> {
        var depth = 0
        return reach(value, depth: &depth)
    }

    private func reach(_ value: String, depth: inout Int) -> Set<Int> {
        if let cached = reachCache[value] { return cached }
        guard depth < 512, let node = index.producerNode(of: value) else { return [] }
        reachCache[value] = []  // a cycle cannot occur in a valid graph; this guards against malformed ones
        var result = Set<Int>()
        if node.outputs.first == value, linear(node.index) != nil {
            result = [node.index]
        } else if let inputs = dataInputs(of: node) {
            depth += 1
            for position in inputs where position < node.inputs.count && !node.inputs[position].isEmpty {
                result.formUnion(reach(node.inputs[position], depth: &depth))
            }
            depth -= 1
        }
        reachCache[value] = result
        return result
    }

    /// The projection behind an attention operand and the columns of it that reach the operand (or reach the
    /// operand's `positions` of its last axis), or a reason why there is not exactly one.
    func source(of operand: AttentionOperand) -> Result<OperandSource, TargetSearchFailure> {
        let whole = source(of: operand.value)
        guard let positions = operand.positions, case .success(let found) = whole else { return whole }
        guard case .exact(let layout)? = found.provenance, layout.axes == [-1], positions.upperBound <= layout.sizes[0] else {
            return .failure(.init("the columns of \(found.projection.node.label) could not be followed to positions \(positions) of it"))
        }
        let columns = Set(layout.selecting(Array(positions), along: 0).entries.joined())
        return .success(OperandSource(projection: found.projection, columns: columns, isExact: true))
    }

    /// The projection behind `operand` and the columns of it that reach it, or a reason why there is not exactly
    /// one.
    func source(of operand: String) -> Result<OperandSource, TargetSearchFailure> {
        let projections = reach(operand)
        guard let projectionIndex = projections.first else {
            return .failure(.init("no linear layer with a 2-D initializer weight feeds it (searched back through reshapes, transposes, slices, elementwise ops and concatenations)"))
        }
        guard projections.count == 1 else {
            let names = projections.sorted().map { index.node($0).label }.joined(separator: ", ")
            return .failure(.init("\(projections.count) linear layers feed it (\(names)); expected one"))
        }
        let projection = linear(projectionIndex)!
        // The nodes between the projection and the operand, in graph order.
        var path = Set<Int>()
        var stack = [operand]
        var seen = Set<String>()
        while let value = stack.popLast() {
            guard seen.insert(value).inserted, !reach(value).isEmpty, let node = index.producerNode(of: value),
                  node.index != projectionIndex else { continue }
            path.insert(node.index)
            for position in dataInputs(of: node) ?? [] where position < node.inputs.count {
                stack.append(node.inputs[position])
            }
        }
        var tracer = ColumnTracer(index: index, projection: projection)
        tracer.run(path.sorted())
        guard let provenance = tracer.provenance(of: operand) else {
            return .failure(.init("the columns of \(projection.node.label) could not be followed to it"))
        }
        return .success(OperandSource(projection: projection, columns: provenance.columns, isExact: provenance.isExact,
                                      provenance: provenance))
    }

    /// The attention output projection: the first linear layer reading `probs·V` through transposes and
    /// reshapes (the heads merged back into features).
    func outputProjection(of block: AttentionBlock) -> GraphIndex.Linear? {
        var queue = [(block.output, 0)]
        var seen = Set<String>()
        while !queue.isEmpty {
            let (value, depth) = queue.removeFirst()
            guard depth < 8, seen.insert(value).inserted else { continue }
            // A dynamically quantised projection reads `value` through its DynamicQuantizeLinear.
            if let quantized = index.dynamicQuantizedLinears(reading: value).first, let linear = linear(quantized) { return linear }
            for consumer in index.consumers[value] ?? [] {
                let node = index.node(consumer)
                guard node.inputs.first == value else { continue }
                if let linear = linear(consumer) { return linear }
                guard node.domain.isEmpty else { continue }
                switch node.opType {
                case "Transpose", "Reshape", "Cast", "Identity", "Flatten", "Dropout":
                    queue.append((node.outputs[0], depth + 1))
                default:
                    break
                }
            }
        }
        return nil
    }
}

/// Why a projection could not be found for one operand; becomes part of a `loraTargetsNotFound` reason.
struct TargetSearchFailure: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}
