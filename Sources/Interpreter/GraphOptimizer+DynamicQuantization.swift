import ONNXGraph

extension GraphOptimizer {
    /// Each dynamically quantised MatMul (`DynamicQuantizedMatMul`: the quantizer's `DynamicQuantizeLinear →
    /// MatMulInteger → Cast → Mul(·, Mul(x_scale, W_scale))`, or onnxruntime's optimised `DynamicQuantizeLinear →
    /// MatMulIntegerToFloat`) becomes one `com.microsoft.DynamicQuantizeMatMul(x, W, W_scale, W_zp, bias)` named
    /// after and placed at the node writing the projection's output. Its forward is the same numbers (the same exact
    /// integer sum and the same float scale product), and it carries the straight-through gradient to x, which the
    /// integer ops cannot. The nodes of the form that nothing reads any more (the DynamicQuantizeLinear once all of
    /// its projections are fused, which q, k and v share) are dropped.
    /// Every value the fused node reads was read by a node of the form before its output node, so the node list stays
    /// in topological order.
    static func fuseDynamicQuantizedMatMuls(_ nodes: [Node], graphOutputs: Set<String>) -> [Node] {
        let projections = DynamicQuantizedMatMul.find(in: nodes).filter { $0.nodes.count > 1 }
        guard !projections.isEmpty else { return nodes }
        var result = nodes
        var candidates = Set<Int>()
        for projection in projections {
            let output = nodes[projection.outputNode]
            var inputs = [projection.input, projection.weight, projection.weightScale, projection.weightZeroPoint, projection.bias]
            while inputs.last == "" { inputs.removeLast() }
            result[projection.outputNode] = Node(
                name: output.name, opType: "DynamicQuantizeMatMul", domain: fusedDomain, inputs: inputs,
                outputs: [output.outputs[0]], metadata: output.metadata, index: output.index)
            candidates.formUnion(projection.nodes.dropLast())
        }
        // Drop the replaced nodes whose outputs nothing reads now, latest first so that a node's readers go before it.
        var removed = Set<Int>()
        var readers: [String: Int] = [:]
        for node in result { for input in node.inputs where !input.isEmpty { readers[input, default: 0] += 1 } }
        for index in candidates.sorted(by: >) {
            let node = result[index]
            guard node.outputs.allSatisfy({ $0.isEmpty || (readers[$0, default: 0] == 0 && !graphOutputs.contains($0)) }) else {
                continue
            }
            removed.insert(index)
            for input in node.inputs where !input.isEmpty { readers[input, default: 0] -= 1 }
        }
        return keeping(result, without: removed)
    }
}
