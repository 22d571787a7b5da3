import ONNXGraph

/// A rewrite that makes a causal LM compute its vocabulary projection only at the positions whose next-token
/// log-probabilities a loss reads: the hidden states `[B, T, C]` entering the output projection are flattened to
/// `[B·T, C]` and gathered at a new int64 graph input of row indices, so the projection (and its backward, and the
/// log-softmax after it) runs on `N` rows instead of `B·T`. For DPO that is the completion tokens only.
///
/// The output projection is found from the graph: walking back from the `logits` output through ops that act on
/// each row alone (Cast, Identity, Tanh, and Mul/Div/Add by a scalar constant, as in logit soft-capping) to a
/// MatMul whose right operand is a 2-D weight (an initializer, or a Transpose of one for tied embeddings).
public enum ScoredPositions {
    /// The graph input holding the flat row indices `b·T + t` of the logits to compute.
    public static let inputName = "onnx_dpo/scored_positions"

    /// The rewritten model, or nil when the graph does not end in a recognisable output projection (the caller then
    /// keeps full logits).
    public static func rewrite(_ model: Model, output: String = "logits") -> Model? {
        var nodes = model.graph.nodes
        let initializers = Dictionary(model.graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var producer: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for name in node.outputs { producer[name] = index }
        }
        var readers: [String: Int] = [:]
        for node in nodes { for input in node.inputs { readers[input, default: 0] += 1 } }
        func isScalarConstant(_ name: String) -> Bool {
            if let shape = initializers[name] { return shape.reduce(1, *) == 1 }
            if let index = producer[name], nodes[index].opType == "Constant",
               case .tensor(let value)? = nodes[index].attributes["value"] { return value.count == 1 }
            return false
        }
        // Walk back from the output to the projection.
        var current = output
        var projection: Int?
        while let index = producer[current] {
            let node = nodes[index]
            switch node.opType {
            case "Cast", "Identity", "Tanh":
                current = node.inputs[0]
                continue
            case "Mul", "Div", "Add":
                guard node.inputs.count == 2, let other = node.inputs.firstIndex(where: isScalarConstant) else { return nil }
                current = node.inputs[1 - other]
                continue
            case "MatMul":
                projection = index
            default:
                return nil
            }
            break
        }
        guard let projection else { return nil }
        let matMul = nodes[projection]
        guard matMul.inputs.count == 2 else { return nil }
        // The weight: [C, V] directly, or Transpose([V, C]) of a tied embedding.
        let weight = matMul.inputs[1]
        var hidden: Int?
        if let shape = initializers[weight], shape.count == 2 {
            hidden = shape[0]
        } else if let index = producer[weight], nodes[index].opType == "Transpose",
                  let shape = initializers[nodes[index].inputs[0]], shape.count == 2 {
            hidden = shape[1]
        }
        guard let hidden, readers[matMul.inputs[0]] != nil else { return nil }

        let states = matMul.inputs[0]
        let shapeName = "onnx_dpo/scored_positions/shape", flat = "onnx_dpo/scored_positions/flat"
        let gathered = "onnx_dpo/scored_positions/gathered"
        let added = [
            Node(name: "onnx_dpo/scored_positions/shape_constant", opType: "Constant", inputs: [], outputs: [shapeName],
                 attributes: ["value": .tensor(Tensor(shape: [2], int64s: [-1, Int64(hidden)]))]),
            Node(name: "onnx_dpo/scored_positions/flatten", opType: "Reshape", inputs: [states, shapeName], outputs: [flat]),
            Node(name: "onnx_dpo/scored_positions/gather", opType: "Gather", inputs: [flat, inputName], outputs: [gathered],
                 attributes: ["axis": .int(0)]),
        ]
        nodes[projection].inputs[0] = gathered
        nodes.insert(contentsOf: added, at: projection)
        for index in nodes.indices { nodes[index].index = index }
        var rewritten = model
        rewritten.graph.nodes = nodes
        rewritten.graph.inputs.append(ValueInfo(name: inputName, elementType: .int64, shape: [.symbolic("scored_positions")]))
        if let index = rewritten.graph.outputs.firstIndex(where: { $0.name == output }) {
            rewritten.graph.outputs[index].shape = [.symbolic("scored_positions"), .unknown]
        }
        return rewritten
    }
}
