import ONNXGraph

extension GraphOptimizer {
    /// `Mul(MatMul(A, B), c)` (either operand order), with `c` a one-element floating-point constant, becomes
    /// `FusedMatMul(A, B, alpha = c)` (an existing FusedMatMul's alpha is multiplied by c), when the product has no
    /// other reader: attention's `(Q·Kᵀ) · 1/√d` as torch's exporters write it. The kernel scales each sum once as it
    /// stores it, which is the same float product as a separate Mul, without its pass over the scores.
    static func foldProductScales(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>, constants: Constants) -> Rewritten {
        var removed = Set<Int>()
        var folded = Set<String>()
        var result = nodes
        for (index, node) in nodes.enumerated() where node.opType == "Mul" && node.domain.isEmpty && node.inputs.count == 2 {
            for position in 0..<2 {
                let scale = node.inputs[1 - position]
                guard let factor = constants.scalar(scale),
                      let source = uses.soleProducer(of: node.inputs[position], graphOutputs: graphOutputs),
                      !removed.contains(source), isFloatProduct(nodes[source]) else { continue }
                var fused = nodes[source]
                let alpha = fused.opType == "FusedMatMul" ? (try? fused.float("alpha", default: 1)) ?? 1 : 1
                fused.opType = "FusedMatMul"
                fused.domain = fusedDomain
                fused.attributes["alpha"] = .float(alpha * factor)
                fused.outputs = node.outputs
                result[index] = fused
                removed.insert(source)
                folded.insert(scale)
                break
            }
        }
        return Rewritten(nodes: keeping(result, without: removed), foldedConstants: folded)
    }

    /// Grouped-query attention's products on repeated key/value heads, `MatMul(A, Reshape(Expand(Unsqueeze(B, axes
    /// [2]), s5), s4))` (a FusedMatMul with an untransposed A too: `Q·Kᵀ` after `fuseTransposedMatMul` and
    /// `foldProductScales`), become `onnx_dpo.GroupedMatMul(A, B, s5, s4)` with the product's transB and alpha, when the
    /// repeat's intermediates have no other reader: the query heads sharing a key/value head are stacked into one
    /// product, and the repeated copy of K and V is never made. The fused op checks the shapes at run time and runs the
    /// three ops when they are not `repeat_kv`'s.
    static func fuseGroupedProducts(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>, constants: Constants) -> Rewritten {
        var removed = Set<Int>()
        var folded = Set<String>()
        var result = nodes
        func sole(_ value: String, _ opType: String) -> Int? {
            uses.soleProducer(of: value, opType: opType, in: nodes, graphOutputs: graphOutputs, excluding: removed)
        }
        for (index, node) in nodes.enumerated() where isFloatProduct(node) && (try? node.int("transA", default: 0)) == 0 {
            guard let reshape = sole(node.inputs[1], "Reshape"), nodes[reshape].inputs.count == 2,
                  let expand = sole(nodes[reshape].inputs[0], "Expand"), nodes[expand].inputs.count == 2,
                  let unsqueeze = sole(nodes[expand].inputs[0], "Unsqueeze") else { continue }
            let axesInput = nodes[unsqueeze].inputs.count > 1 ? nodes[unsqueeze].inputs[1] : ""
            let axes: [Int]?
            if !axesInput.isEmpty {
                axes = constants.ints(axesInput)
            } else if case .ints(let values)? = nodes[unsqueeze].attributes["axes"] {
                axes = values
            } else {
                axes = nil
            }
            guard axes == [2] else { continue }
            var attributes: [String: Attribute] = [
                "transB": .int((try? node.int("transB", default: 0)) ?? 0),
                "alpha": .float(node.opType == "FusedMatMul" ? (try? node.float("alpha", default: 1)) ?? 1 : 1),
            ]
            if let allowZero = try? nodes[reshape].int("allowzero", default: 0), allowZero != 0 { attributes["allowzero"] = .int(1) }
            result[index] = Node(name: node.name, opType: "GroupedMatMul", domain: internalDomain,
                                 inputs: [node.inputs[0], nodes[unsqueeze].inputs[0], nodes[expand].inputs[1], nodes[reshape].inputs[1]],
                                 outputs: node.outputs, attributes: attributes, metadata: node.metadata, index: node.index)
            removed.formUnion([reshape, expand, unsqueeze])
            if !axesInput.isEmpty { folded.insert(axesInput) }
        }
        return Rewritten(nodes: keeping(result, without: removed), foldedConstants: folded)
    }

    /// Whether `node` is a two-operand default-domain MatMul or one of our FusedMatMuls.
    private static func isFloatProduct(_ node: Node) -> Bool {
        node.inputs.count == 2 && (node.opType == "MatMul" && node.domain.isEmpty
                                   || node.opType == "FusedMatMul" && node.domain == fusedDomain)
    }

    /// `Mul(QuickGelu(gate), up)` (either operand order) becomes `onnx_dpo.GatedQuickGelu(gate, up)` when the
    /// activation has no other reader: a gated MLP's `SiLU(gate) · up` once `fuseSwish` has made the SiLU.
    static func fuseGatedActivation(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>) -> [Node] {
        var removed = Set<Int>()
        var result = nodes
        for (index, node) in nodes.enumerated() where node.opType == "Mul" && node.domain.isEmpty && node.inputs.count == 2 {
            for position in 0..<2 {
                guard let source = uses.soleProducer(of: node.inputs[position], graphOutputs: graphOutputs),
                      !removed.contains(source), nodes[source].opType == "QuickGelu", nodes[source].domain == fusedDomain,
                      nodes[source].inputs.count == 1 else { continue }
                let alpha = (try? nodes[source].float("alpha", default: 1.702)) ?? 1.702
                result[index] = Node(name: node.name, opType: "GatedQuickGelu", domain: internalDomain,
                                     inputs: [nodes[source].inputs[0], node.inputs[1 - position]], outputs: node.outputs,
                                     attributes: ["alpha": .float(alpha)], metadata: node.metadata, index: node.index)
                removed.insert(source)
                break
            }
        }
        return keeping(result, without: removed)
    }

    /// RMSNorm spelled out in elementary ops, as torch's exporters write Llama's, Qwen's and Phi-3's (`x ·
    /// rsqrt(mean(x², -1) + ε) · weight`):
    ///
    ///     Pow(x, 2) | Mul(x, x) → ReduceMean(axes [-1], keepdims) → Add(·, ε) → Sqrt → Reciprocal | Div(1, ·)
    ///       → Mul(x, ·) → Mul(weight, ·)
    ///
    /// (operands of Mul and Add in either order) becomes one `SimplifiedLayerNormalization(x, weight, axis -1,
    /// epsilon ε)`, when every intermediate has no other reader and the weight is a 1-D initializer. One pass over x
    /// for the statistics and one for the output instead of seven ops and five intermediate tensors, and a backward
    /// that saves only x and the per-row factor.
    static func fuseRMSNormalization(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>, constants: Constants) -> Rewritten {
        var removed = Set<Int>()
        var folded = Set<String>()
        var result = nodes
        func sole(_ value: String, _ opType: String) -> Int? {
            uses.soleProducer(of: value, opType: opType, in: nodes, graphOutputs: graphOutputs, excluding: removed)
        }
        // The constant operand of a two-input node and the other one, when the constant is `test`'s.
        func split(_ node: Node, where test: (String) -> Bool) -> (constant: String, other: String)? {
            guard node.inputs.count == 2 else { return nil }
            if test(node.inputs[1]) { return (node.inputs[1], node.inputs[0]) }
            if test(node.inputs[0]) { return (node.inputs[0], node.inputs[1]) }
            return nil
        }
        for (index, node) in nodes.enumerated() where node.opType == "Mul" && node.domain.isEmpty {
            guard let (weight, normalized) = split(node, where: { constants.initializerShapes[$0]?.count == 1 }),
                  let scaling = sole(normalized, "Mul"), nodes[scaling].inputs.count == 2 else { continue }
            // Mul(x, r): find which operand is r = 1/√(mean(x²) + ε).
            for position in 0..<2 {
                let x = nodes[scaling].inputs[1 - position], inverse = nodes[scaling].inputs[position]
                var chain: [Int] = [scaling]
                var used: [String] = []
                let root: Int?
                if let reciprocal = sole(inverse, "Reciprocal") {
                    root = sole(nodes[reciprocal].inputs[0], "Sqrt")
                    chain.append(reciprocal)
                } else if let division = sole(inverse, "Div"), nodes[division].inputs.count == 2,
                          constants.scalar(nodes[division].inputs[0]) == 1 {
                    root = sole(nodes[division].inputs[1], "Sqrt")
                    chain.append(division)
                    used.append(nodes[division].inputs[0])
                } else {
                    continue
                }
                guard let root, let sum = sole(nodes[root].inputs[0], "Add"),
                      let (epsilonName, meanValue) = split(nodes[sum], where: { constants.scalar($0) != nil }),
                      let epsilon = constants.scalar(epsilonName),
                      let mean = sole(meanValue, "ReduceMean"), reducesLastAxisKeepingIt(nodes[mean], constants),
                      let square = uses.soleProducer(of: nodes[mean].inputs[0], graphOutputs: graphOutputs),
                      !removed.contains(square), squares(nodes[square], x, constants) else { continue }
                chain += [root, sum, mean, square]
                used += [epsilonName] + nodes[mean].inputs.dropFirst() + nodes[square].inputs.filter { $0 != x }
                result[index] = Node(name: node.name, opType: "SimplifiedLayerNormalization", inputs: [x, weight],
                                     outputs: [node.outputs[0]],
                                     attributes: ["axis": .int(-1), "epsilon": .float(epsilon)],
                                     metadata: node.metadata, index: node.index)
                removed.formUnion(chain)
                folded.formUnion(used.filter { !$0.isEmpty })
                break
            }
        }
        return Rewritten(nodes: keeping(result, without: removed), foldedConstants: folded)
    }

    /// Rotary position embedding in Hugging Face's "rotate half" form, as torch's exporters spell it out:
    ///
    ///     Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, h, ∞, axis)), Slice(x, 0, h, axis), axis -1), sin))
    ///
    /// (operands of Add and Mul in either order) becomes `onnx_dpo.RotateHalfEmbedding(x, cos, sin, split h, axis)`,
    /// when every intermediate has no other reader and the slice bounds are constants. The fused op checks at run time
    /// that the axis is x's last, as the Concat's -1 requires.
    static func fuseRotateHalf(_ nodes: [Node], uses: Uses, graphOutputs: Set<String>, constants: Constants) -> Rewritten {
        var removed = Set<Int>()
        var folded = Set<String>()
        var result = nodes
        func sole(_ value: String, _ opType: String) -> Int? {
            uses.soleProducer(of: value, opType: opType, in: nodes, graphOutputs: graphOutputs, excluding: removed)
        }
        // A Slice of `data` from `start` to `end` (nil: to the end) along one constant axis, step 1: its axis.
        func slice(_ index: Int, start: Int, end: Int?) -> (data: String, axis: Int)? {
            let node = nodes[index]
            guard node.inputs.count >= 4, constants.ints(node.inputs[1]) == [start], let ends = constants.ints(node.inputs[2]),
                  ends.count == 1, end.map({ ends[0] == $0 }) ?? (ends[0] >= Int(Int32.max)),
                  let axes = constants.ints(node.inputs[3]), axes.count == 1 else { return nil }
            if node.inputs.count > 4 && !node.inputs[4].isEmpty && constants.ints(node.inputs[4]) != [1] { return nil }
            return (node.inputs[0], axes[0])
        }
        for (index, node) in nodes.enumerated() where node.opType == "Add" && node.domain.isEmpty && node.inputs.count == 2 {
            search: for (first, second) in [(0, 1), (1, 0)] {
                guard let direct = sole(node.inputs[first], "Mul"), let rotatedProduct = sole(node.inputs[second], "Mul"),
                      nodes[direct].inputs.count == 2, nodes[rotatedProduct].inputs.count == 2 else { continue }
                for position in 0..<2 {
                    let sin = nodes[rotatedProduct].inputs[1 - position]
                    guard let concat = sole(nodes[rotatedProduct].inputs[position], "Concat"), nodes[concat].inputs.count == 2,
                          (try? nodes[concat].int("axis", default: 0)) == -1,
                          let negation = sole(nodes[concat].inputs[0], "Neg"),
                          let upper = sole(nodes[negation].inputs[0], "Slice"), let lower = sole(nodes[concat].inputs[1], "Slice"),
                          let end = constants.ints(nodes[lower].inputs.count > 2 ? nodes[lower].inputs[2] : "")?.first, end > 0,
                          let (x, axis) = slice(lower, start: 0, end: end), let (upperData, upperAxis) = slice(upper, start: end, end: nil),
                          upperData == x, upperAxis == axis, nodes[direct].inputs.contains(x) else { continue }
                    let cos = nodes[direct].inputs[0] == x ? nodes[direct].inputs[1] : nodes[direct].inputs[0]
                    result[index] = Node(name: node.name, opType: "RotateHalfEmbedding", domain: internalDomain,
                                         inputs: [x, cos, sin], outputs: [node.outputs[0]],
                                         attributes: ["split": .int(end), "axis": .int(axis)], metadata: node.metadata,
                                         index: node.index)
                    removed.formUnion([direct, rotatedProduct, concat, negation, upper, lower])
                    folded.formUnion((nodes[lower].inputs.dropFirst() + nodes[upper].inputs.dropFirst()).filter { !$0.isEmpty })
                    break search
                }
            }
        }
        return Rewritten(nodes: keeping(result, without: removed), foldedConstants: folded)
    }

    /// Whether `node` is a default-domain ReduceMean over the last axis alone (attribute or constant input), keeping it.
    private static func reducesLastAxisKeepingIt(_ node: Node, _ constants: Constants) -> Bool {
        guard (try? node.int("keepdims", default: 1)) == 1, node.outputs.count == 1 else { return false }
        if node.inputs.count >= 2 && !node.inputs[1].isEmpty { return constants.ints(node.inputs[1]) == [-1] }
        if case .ints(let axes)? = node.attributes["axes"] { return axes == [-1] }
        return false
    }

    /// Whether `node` is `x²`: a default-domain `Pow(x, 2)` or `Mul(x, x)`.
    private static func squares(_ node: Node, _ x: String, _ constants: Constants) -> Bool {
        guard node.domain.isEmpty, node.inputs.count == 2, node.inputs[0] == x else { return false }
        switch node.opType {
        case "Pow": return constants.scalar(node.inputs[1]) == 2 || constants.ints(node.inputs[1]) == [2]
        case "Mul": return node.inputs[1] == x
        default: return false
        }
    }
}
