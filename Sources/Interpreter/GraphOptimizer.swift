import ONNXGraph

/// Rewrites a graph's nodes into an equivalent, cheaper list before a session runs them. Each rewrite is local,
/// keeps every value a caller can observe (graph outputs), and knows no architecture.
enum GraphOptimizer {
    /// The domain of the ops the rewrites introduce (onnxruntime's contrib domain, whose ops they are).
    static let fusedDomain = "com.microsoft"
    /// The domain of the fused ops that are ours alone (onnxruntime has no equivalent); they exist only inside a session.
    static let internalDomain = "onnx_dpo"

    /// The rewritten nodes, and the constants some rewrite copied into an attribute (an epsilon, a scale): replacing
    /// or training one of those would no longer reach the fused node, so the session refuses to.
    struct Rewritten {
        var nodes: [Node]
        var foldedConstants: Set<String> = []
    }

    /// Applies every rewrite, in order. `constants` are the graph's small constants, which the rewrites that fold a
    /// constant into an attribute read; without them those rewrites leave the graph alone.
    static func optimize(_ nodes: [Node], graphOutputs: Set<String>, constants: Constants = Constants()) -> Rewritten {
        let quantized = fuseDynamicQuantizedMatMuls(nodes, graphOutputs: graphOutputs)
        let fused = fuseTransposedMatMul(quantized, uses: Uses(quantized), graphOutputs: graphOutputs)
        var rewritten = foldProductScales(fused, uses: Uses(fused), graphOutputs: graphOutputs, constants: constants)
        let grouped = fuseGroupedProducts(rewritten.nodes, uses: Uses(rewritten.nodes), graphOutputs: graphOutputs,
                                          constants: constants)
        rewritten.nodes = grouped.nodes
        rewritten.foldedConstants.formUnion(grouped.foldedConstants)
        rewritten.nodes = fuseSwish(rewritten.nodes, uses: Uses(rewritten.nodes), graphOutputs: graphOutputs)
        rewritten.nodes = fuseGatedActivation(rewritten.nodes, uses: Uses(rewritten.nodes), graphOutputs: graphOutputs)
        let rotated = fuseRotateHalf(rewritten.nodes, uses: Uses(rewritten.nodes), graphOutputs: graphOutputs, constants: constants)
        rewritten.nodes = rotated.nodes
        rewritten.foldedConstants.formUnion(rotated.foldedConstants)
        let normalized = fuseRMSNormalization(rewritten.nodes, uses: Uses(rewritten.nodes), graphOutputs: graphOutputs,
                                              constants: constants)
        return Rewritten(nodes: normalized.nodes, foldedConstants: rewritten.foldedConstants.union(normalized.foldedConstants))
    }

    /// The values of a graph's small constants: initializers of at most `maximumCount` values and the outputs of
    /// `Constant` nodes, by name.
    struct Constants {
        static let maximumCount = 16

        private(set) var tensors: [String: Tensor] = [:]
        /// The shapes of every initializer, small or not.
        private(set) var initializerShapes: [String: [Int]] = [:]

        init() {}

        /// From the values of the graph's small initializers, every initializer's shape (by default the given
        /// values' own), and the `Constant` nodes among `nodes`.
        init(initializers: [String: Tensor], shapes: [String: [Int]]? = nil, nodes: [Node]) {
            initializerShapes = shapes ?? initializers.mapValues(\.shape)
            for (name, tensor) in initializers where tensor.count <= Self.maximumCount { tensors[name] = tensor }
            for node in nodes where node.opType == "Constant" && node.domain.isEmpty && node.outputs.count == 1 {
                switch node.attributes.first?.value {
                case .tensor(let value)? where node.attributes.count == 1 && value.count <= Self.maximumCount:
                    tensors[node.outputs[0]] = value
                case .float(let value)? where node.attributes.count == 1:
                    tensors[node.outputs[0]] = Tensor(shape: [], floats: [value])
                default:
                    continue
                }
            }
        }

        /// The value of a one-element floating-point constant.
        func scalar(_ name: String) -> Float? {
            guard let tensor = tensors[name], tensor.count == 1, case .float(let values) = tensor.storage else { return nil }
            return values[0]
        }

        /// The values of an integer constant.
        func ints(_ name: String) -> [Int]? {
            guard let tensor = tensors[name], tensor.storage.kind.isInteger else { return nil }
            return tensor.int64s.map(Int.init)
        }
    }

    /// How often each value is read, and which node writes it.
    struct Uses {
        var readers: [String: Int] = [:]
        var producer: [String: Int] = [:]

        init(_ nodes: [Node]) {
            for (index, node) in nodes.enumerated() {
                for input in node.inputs where !input.isEmpty { readers[input, default: 0] += 1 }
                for output in node.outputs where !output.isEmpty { producer[output] = index }
            }
        }

        /// The node writing `value`, when `value` is read exactly once and is not a graph output (so that a
        /// rewrite may fold that node into its reader).
        func soleProducer(of value: String, graphOutputs: Set<String>) -> Int? {
            guard readers[value] == 1, !graphOutputs.contains(value) else { return nil }
            return producer[value]
        }

        /// `soleProducer(of:)` when it is a default-domain `opType` node of `nodes` not among `removed` (the nodes a
        /// rewrite has already folded away).
        func soleProducer(of value: String, opType: String, in nodes: [Node], graphOutputs: Set<String>,
                          excluding removed: Set<Int>) -> Int? {
            guard let index = soleProducer(of: value, graphOutputs: graphOutputs), !removed.contains(index),
                  nodes[index].opType == opType, nodes[index].domain.isEmpty else { return nil }
            return index
        }
    }

    /// `Transpose(X, perm swapping the last two axes) → MatMul` becomes `FusedMatMul(transA/transB)` reading X in
    /// place, when the transpose's result has no other reader. Attention's `Q · Kᵀ` and a tied output embedding
    /// (`hidden · Eᵀ`) are the cases that pay: each would otherwise copy a tensor on every run.
    static func fuseTransposedMatMul(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>) -> [Node] {
        var removed = Set<Int>()
        var result = nodes
        for (index, node) in nodes.enumerated() where node.opType == "MatMul" && node.domain.isEmpty && node.inputs.count == 2 {
            var fused = node
            var flags: [String: Attribute] = [:]
            for (position, flag) in [(0, "transA"), (1, "transB")] {
                guard let source = uses.soleProducer(of: node.inputs[position], graphOutputs: graphOutputs),
                      !removed.contains(source), swapsLastTwoAxes(nodes[source]) else { continue }
                fused.inputs[position] = nodes[source].inputs[0]
                flags[flag] = .int(1)
                removed.insert(source)
            }
            guard !flags.isEmpty else { continue }
            fused.opType = "FusedMatMul"
            fused.domain = fusedDomain
            fused.attributes = flags
            result[index] = fused
        }
        return keeping(result, without: removed)
    }

    /// `Mul(X, Sigmoid(X))` (either operand order) becomes `QuickGelu(X, alpha = 1)`, i.e. SiLU, when the sigmoid
    /// has no other reader: one pass and no intermediate tensor instead of two passes.
    static func fuseSwish(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>) -> [Node] {
        var removed = Set<Int>()
        var result = nodes
        for (index, node) in nodes.enumerated() where node.opType == "Mul" && node.domain.isEmpty && node.inputs.count == 2 {
            for position in 0..<2 {
                let other = node.inputs[1 - position]
                guard let source = uses.soleProducer(of: node.inputs[position], graphOutputs: graphOutputs),
                      !removed.contains(source), nodes[source].opType == "Sigmoid", nodes[source].domain.isEmpty,
                      nodes[source].inputs.first == other else { continue }
                var fused = node
                fused.opType = "QuickGelu"
                fused.domain = fusedDomain
                fused.inputs = [other]
                fused.attributes = ["alpha": .float(1)]
                result[index] = fused
                removed.insert(source)
                break
            }
        }
        return keeping(result, without: removed)
    }

    /// `nodes` without those at the positions in `removed` (the nodes a rewrite folded into others).
    static func keeping(_ nodes: [Node], without removed: Set<Int>) -> [Node] {
        nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    }

    /// Whether `node` is a default-domain Transpose whose `perm` is the identity but for the last two axes.
    private static func swapsLastTwoAxes(_ node: Node) -> Bool {
        guard node.opType == "Transpose", node.domain.isEmpty,
              case .ints(let perm)? = node.attributes["perm"], perm.count >= 2 else { return false }
        let rank = perm.count
        return perm == Array(0..<(rank - 2)) + [rank - 1, rank - 2]
    }
}
