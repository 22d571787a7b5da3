import ONNXGraph

/// Rewrites a graph's nodes into an equivalent, cheaper list before a session runs them. Each rewrite is local,
/// keeps every value a caller can observe (graph outputs), and knows no architecture.
enum GraphOptimizer {
    /// The domain of the ops the rewrites introduce (onnxruntime's contrib domain, whose ops they are).
    static let fusedDomain = "com.microsoft"

    /// `Transpose(X, perm swapping the last two axes) → MatMul` becomes `FusedMatMul(transA/transB)` reading X in
    /// place, when the transpose's result has no other reader. Attention's `Q · Kᵀ` and a tied output embedding
    /// (`hidden · Eᵀ`) are the cases that pay: each would otherwise copy a tensor on every run.
    static func optimize(_ nodes: [Node], graphOutputs: Set<String>) -> [Node] {
        var readers: [String: Int] = [:]
        for node in nodes {
            for input in node.inputs where !input.isEmpty { readers[input, default: 0] += 1 }
        }
        var producer: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for output in node.outputs where !output.isEmpty { producer[output] = index }
        }
        var removed = Set<Int>()
        var result = nodes
        for (index, node) in nodes.enumerated() where node.opType == "MatMul" && node.domain.isEmpty && node.inputs.count == 2 {
            var fused = node
            var flags: [String: Attribute] = [:]
            for (position, flag) in [(0, "transA"), (1, "transB")] {
                let operand = node.inputs[position]
                guard let source = producer[operand], !removed.contains(source),
                      readers[operand] == 1, !graphOutputs.contains(operand),
                      swapsLastTwoAxes(nodes[source]) else { continue }
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
        return result.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    }

    /// Whether `node` is a default-domain Transpose whose `perm` is the identity but for the last two axes.
    private static func swapsLastTwoAxes(_ node: Node) -> Bool {
        guard node.opType == "Transpose", node.domain.isEmpty,
              case .ints(let perm)? = node.attributes["perm"], perm.count >= 2 else { return false }
        let rank = perm.count
        return perm == Array(0..<(rank - 2)) + [rank - 1, rank - 2]
    }
}
