import ONNXGraph

/// One scaled-dot-product attention as exported graphs decompose it: `Softmax(Q·Kᵀ · scale + mask) · V`.
struct AttentionBlock {
    var softmax: Node
    /// The `Q·Kᵀ` MatMul: input 0 is the queries, input 1 the transposed keys.
    var scores: Node
    /// The `probs·V` MatMul: input 1 is the values.
    var output: Node
}

/// Where one attention operand comes from: the linear layer whose output reaches it, and which of that
/// layer's output features do.
struct OperandSource {
    var projection: GraphIndex.Linear
    var columns: Set<Int>
    /// False when the columns are only an upper bound (see `ColumnProvenance.bounded`).
    var isExact: Bool
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
    /// soft cap) and whose output is the left operand of another MatMul of activations, in graph order.
    func blocks() -> [AttentionBlock] {
        index.graph.nodes.compactMap { node in
            guard node.opType == "Softmax", node.domain.isEmpty,
                  let scores = scoresMatMul(before: node.inputs[0]),
                  let output = outputMatMul(after: node.outputs[0]) else { return nil }
            return AttentionBlock(softmax: node, scores: scores, output: output)
        }
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

    /// The projection behind an attention operand and the columns of it that reach the operand, or a reason
    /// why there is not exactly one.
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
        return .success(OperandSource(projection: projection, columns: provenance.columns, isExact: provenance.isExact))
    }

    /// The attention output projection: the first linear layer reading `probs·V` through transposes and
    /// reshapes (the heads merged back into features).
    func outputProjection(of block: AttentionBlock) -> GraphIndex.Linear? {
        var queue = [(block.output.outputs[0], 0)]
        var seen = Set<String>()
        while !queue.isEmpty {
            let (value, depth) = queue.removeFirst()
            guard depth < 8, seen.insert(value).inserted else { continue }
            for consumer in index.consumers[value] ?? [] {
                let node = index.node(consumer)
                guard node.domain.isEmpty, node.inputs.first == value else { continue }
                if let linear = linear(consumer) { return linear }
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
