import ONNXGraph

/// Look-ups over a loaded graph that target discovery needs: who produces and who reads each value, which
/// values are initializers, which nodes are linear layers, and the integer values that shape arithmetic
/// (Reshape targets, Slice bounds, Split sizes) can be folded to without running the model.
final class GraphIndex {
    let model: Model
    var graph: Graph { model.graph }
    /// Value name -> index of the node that produces it.
    private(set) var producer: [String: Int] = [:]
    /// Value name -> indices of the nodes that read it, in graph order.
    private(set) var consumers: [String: [Int]] = [:]
    let initializers: [String: Initializer]
    /// Declared shapes (`value_info`, graph inputs and outputs), used only for their fixed dimensions.
    private let declaredShapes: [String: [Dimension]]
    private let graphOutputs: Set<String>
    private var constantCache: [String: [Int]?] = [:]
    /// Dynamically quantised MatMuls (onnxruntime's quantizer, onnx-community `model_int8`), by the index of the node
    /// writing their float output.
    let quantizedMatMuls: [Int: DynamicQuantizedMatMul]

    init(model: Model) {
        self.model = model
        let graph = model.graph
        var initializers: [String: Initializer] = [:]
        for initializer in graph.initializers { initializers[initializer.name] = initializer }
        self.initializers = initializers
        var shapes: [String: [Dimension]] = [:]
        for info in graph.inputs + graph.outputs + graph.valueInfo {
            if let shape = info.shape { shapes[info.name] = shape }
        }
        declaredShapes = shapes
        graphOutputs = Set(graph.outputs.map(\.name))
        quantizedMatMuls = Dictionary(DynamicQuantizedMatMul.find(in: graph.nodes).map { ($0.outputNode, $0) },
                                      uniquingKeysWith: { first, _ in first })
        for node in graph.nodes {
            for output in node.outputs where !output.isEmpty { producer[output] = node.index }
            for input in Set(node.inputs) where !input.isEmpty { consumers[input, default: []].append(node.index) }
        }
    }

    func node(_ index: Int) -> Node { graph.nodes[index] }

    /// The node producing `value`, nil for graph inputs and initializers.
    func producerNode(of value: String) -> Node? {
        producer[value].map { graph.nodes[$0] }
    }

    func isGraphOutput(_ value: String) -> Bool { graphOutputs.contains(value) }

    /// The initializer `value` is, looking through `Identity` nodes (TorchScript reads a weight it merged with an
    /// identical one through an Identity).
    func initializer(behind value: String) -> Initializer? {
        var name = value
        for _ in 0..<8 {
            if let initializer = initializers[name] { return initializer }
            guard let node = producerNode(of: name), node.opType == "Identity", node.domain.isEmpty,
                  let input = node.inputs.first else { return nil }
            name = input
        }
        return nil
    }

    /// True when `value` is fixed by the file (an initializer or a `Constant`), not computed from the inputs.
    func isConstant(_ value: String) -> Bool {
        if initializer(behind: value) != nil { return true }
        return producerNode(of: value)?.opType == "Constant"
    }

    // MARK: - Linear layers

    /// A MatMul or Gemm that multiplies an activation by a 2-D floating-point initializer.
    struct Linear {
        var node: Node
        var weight: Initializer
        var layout: LoRATarget.Layout
        var inFeatures: Int
        var outFeatures: Int
        /// The Gemm's `C`, or the 1-D initializer of an `Add` that reads only this node's output.
        var bias: String?
    }

    /// `node` as a linear layer, or nil when it is not one.
    func linear(_ node: Node) -> Linear? {
        if node.opType == "MatMulNBits", node.domain == "com.microsoft" { return quantizedLinear(node) }
        if let projection = quantizedMatMuls[node.index] { return dynamicQuantizedLinear(node, projection) }
        guard node.domain.isEmpty, node.inputs.count >= 2, !isConstant(node.inputs[0]),
              let weight = initializer(behind: node.inputs[1]), weight.shape.count == 2, weight.dataType.isFloatingPoint
        else { return nil }
        switch node.opType {
        case "MatMul":
            var result = Linear(node: node, weight: weight, layout: .matMul, inFeatures: weight.shape[0],
                                outFeatures: weight.shape[1])
            result.bias = biasAdd(after: node, features: weight.shape[1])
            return result
        case "Gemm":
            guard (try? node.int("transA", default: 0)) == 0, let transB = try? node.int("transB", default: 0) else {
                return nil
            }
            let (inputs, outputs) = transB == 0 ? (weight.shape[0], weight.shape[1]) : (weight.shape[1], weight.shape[0])
            var result = Linear(node: node, weight: weight, layout: .gemm(transB: transB != 0), inFeatures: inputs,
                                outFeatures: outputs)
            if node.inputs.count > 2, !node.inputs[2].isEmpty {
                result.bias = initializer(behind: node.inputs[2])?.name ?? node.inputs[2]
            }
            return result
        default:
            return nil
        }
    }

    /// A `com.microsoft.MatMulNBits` on an initializer weight (uint8 `[N, blocks, bytes]`, attributes K and N) and
    /// an activation: a linear layer `[K -> N]` whose quantised weight stays frozen. Its bias is input 5, or an
    /// `Add` of a 1-D initializer right after it. A g_idx (input 4) is not one (the interpreter refuses it).
    private func quantizedLinear(_ node: Node) -> Linear? {
        guard node.inputs.count >= 3, !isConstant(node.inputs[0]), let weight = initializer(behind: node.inputs[1]),
              weight.shape.count == 3, weight.dataType == .uint8, node.inputs.count < 5 || node.inputs[4].isEmpty,
              let k = try? node.int("K"), let n = try? node.int("N"), let blockSize = try? node.int("block_size"),
              let bits = try? node.int("bits", default: 4), weight.shape[0] == n else { return nil }
        var result = Linear(node: node, weight: weight, layout: .matMulNBits(bits: bits, blockSize: blockSize),
                            inFeatures: k, outFeatures: n)
        if node.inputs.count > 5, !node.inputs[5].isEmpty {
            result.bias = initializer(behind: node.inputs[5])?.name ?? node.inputs[5]
        } else {
            result.bias = biasAdd(after: node, features: n)
        }
        return result
    }

    /// A dynamically quantised MatMul (`DynamicQuantizedMatMul`) on an int8/uint8 initializer weight `[in, out]`: a
    /// linear layer whose node is the one writing its float output (the last `Mul` of the quantizer's form), whose
    /// input is the float activation before its `DynamicQuantizeLinear`, and whose weight stays frozen. Its bias is
    /// the fused node's, or an `Add` of a 1-D initializer right after it.
    private func dynamicQuantizedLinear(_ node: Node, _ projection: DynamicQuantizedMatMul) -> Linear? {
        guard !isConstant(projection.input), let weight = initializer(behind: projection.weight), weight.shape.count == 2,
              weight.dataType == .int8 || weight.dataType == .uint8 else { return nil }
        var result = Linear(node: node, weight: weight, layout: .matMulInteger, inFeatures: weight.shape[0],
                            outFeatures: weight.shape[1])
        result.bias = projection.bias.isEmpty ? biasAdd(after: node, features: weight.shape[1])
            : initializer(behind: projection.bias)?.name ?? projection.bias
        return result
    }

    /// The dynamically quantised linear layers reading `value` as their float input, in graph order.
    func dynamicQuantizedLinears(reading value: String) -> [Int] {
        quantizedMatMuls.values.filter { $0.input == value }.map(\.outputNode).sorted()
    }

    /// The bias of `MatMul + Add(bias)`: a 1-D initializer of `features` values added to the MatMul's output,
    /// which nothing else reads.
    private func biasAdd(after node: Node, features: Int) -> String? {
        let output = node.outputs[0]
        guard let readers = consumers[output], readers.count == 1 else { return nil }
        let add = graph.nodes[readers[0]]
        guard add.opType == "Add", add.domain.isEmpty, add.inputs.count == 2 else { return nil }
        let other = add.inputs[0] == output ? add.inputs[1] : add.inputs[0]
        guard let bias = initializer(behind: other), bias.shape == [features] else { return nil }
        return bias.name
    }

    // MARK: - Ranks

    /// The rank of every value whose rank follows from the graph inputs' declared ranks and the ops' rules
    /// (TorchScript exports declare no intermediate shapes, and a Slice's or Split's non-negative axis needs it).
    private(set) lazy var ranks: [String: Int] = inferRanks()

    private func inferRanks() -> [String: Int] {
        var ranks: [String: Int] = [:]
        for info in graph.inputs + graph.valueInfo + graph.outputs {
            if let shape = info.shape { ranks[info.name] = shape.count }
        }
        for initializer in graph.initializers { ranks[initializer.name] = initializer.shape.count }
        for node in graph.nodes where node.domain.isEmpty {
            let inputRanks = node.inputs.map { $0.isEmpty ? nil : ranks[$0] }
            let first = inputRanks.first ?? nil
            var rank: Int?
            switch node.opType {
            case "Constant":
                if case .tensor(let tensor)? = node.attributes["value"] { rank = tensor.rank }
                else if node.attributes["value_int"] != nil || node.attributes["value_float"] != nil { rank = 0 }
                else if node.attributes["value_ints"] != nil || node.attributes["value_floats"] != nil { rank = 1 }
            case "Identity", "Cast", "Neg", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "Softmax",
                 "LayerNormalization", "Dropout", "Slice", "Split", "Not", "IsNaN", "IsInf", "Exp", "Log", "Abs",
                 "Transpose", "Concat", "Tile", "Trilu", "CumSum", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign":
                rank = first
            case "Add", "Sub", "Mul", "Div", "Pow", "Where", "Equal", "Greater", "Less", "LessOrEqual",
                 "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min", "Mod", "BitShift":
                let known = inputRanks.compactMap { $0 }
                rank = known.count == node.inputs.filter({ !$0.isEmpty }).count ? known.max() : nil
            case "MatMul":
                if let a = inputRanks[0], let b = inputRanks.count > 1 ? inputRanks[1] : nil {
                    rank = a == 1 && b == 1 ? 0 : a == 1 ? b - 1 : b == 1 ? a - 1 : max(a, b)
                }
            case "Gemm", "Flatten":
                rank = 2
            case "Shape", "Range", "NonZero":
                rank = node.opType == "NonZero" ? 2 : 1
            case "Size":
                rank = 0
            case "Gather":
                if let data = first, let indices = inputRanks.count > 1 ? inputRanks[1] : nil { rank = data + indices - 1 }
            case "Reshape", "ConstantOfShape", "Expand":
                let shapeInput = node.opType == "ConstantOfShape" ? node.inputs[0] : node.inputs[1]
                if let length = partialInts(shapeInput, dimensions: declaredDimensions)?.count {
                    rank = node.opType == "Expand" ? first.map { max($0, length) } : length
                }
            case "Unsqueeze", "Squeeze":
                var count: Int?
                if node.inputs.count > 1, !node.inputs[1].isEmpty {
                    count = partialInts(node.inputs[1], dimensions: declaredDimensions)?.count
                } else {
                    count = (try? node.ints("axes"))?.count
                }
                if let first, let count { rank = node.opType == "Unsqueeze" ? first + count : first - count }
            case "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2":
                if (try? node.int("keepdims", default: 1)) == 1 { rank = first }
            default:
                rank = nil
            }
            if let rank, rank >= 0 {
                for output in node.outputs where !output.isEmpty && ranks[output] == nil { ranks[output] = rank }
            }
        }
        return ranks
    }

    // MARK: - Integer constants and shape arithmetic

    /// The values of an integer value fixed by the file (initializer or `Constant`, through Identity), nil
    /// when it is computed or not integer. Large tensors are not read.
    func constantInts(_ value: String) -> [Int]? {
        if let cached = constantCache[value] { return cached }
        var result: [Int]?
        if let initializer = initializer(behind: value) {
            if initializer.dataType.isInteger, initializer.count <= 4096,
               let tensor = try? model.loadTensor(initializer), let values = tensor.int64Values {
                result = values.map { Int($0) }
            }
        } else if let node = producerNode(of: value), node.opType == "Constant" {
            if case .int(let value)? = node.attributes["value_int"] {
                result = [value]
            } else if case .ints(let values)? = node.attributes["value_ints"] {
                result = values
            } else if case .tensor(let tensor)? = node.attributes["value"], let values = tensor.int64Values {
                result = values.map { Int($0) }
            }
        }
        constantCache[value] = result
        return result
    }

    /// The declared dimensions of `value` (nil entries where the dimension is not a fixed number), or nil when
    /// its rank is not declared.
    func declaredDimensions(_ value: String) -> [Int?]? {
        if let initializer = initializers[value] { return initializer.shape }
        return declaredShapes[value]?.map { if case .fixed(let size) = $0 { size } else { nil } }
    }

    /// The declared dimensions of `value`, or as many unknown dimensions as its inferred rank.
    func knownDimensions(_ value: String) -> [Int?]? {
        declaredDimensions(value) ?? ranks[value].map { [Int?](repeating: nil, count: $0) }
    }

    /// Folds the integer value `value` as far as the graph allows: the result has the value's length, with nil
    /// for elements that depend on the input (batch, sequence). `dimensions(of:)` supplies what is known of a
    /// tensor's shape for `Shape` nodes. Nil when even the length is unknown.
    func partialInts(_ value: String, dimensions: (String) -> [Int?]?, depth: Int = 0) -> [Int?]? {
        if let known = constantInts(value) { return known }
        guard depth < 32, let node = producerNode(of: value), node.domain.isEmpty else { return nil }
        func fold(_ input: String) -> [Int?]? { partialInts(input, dimensions: dimensions, depth: depth + 1) }
        switch node.opType {
        case "Shape":
            guard let dims = dimensions(node.inputs[0]) else {
                // Without the rank, `Shape` with a non-negative window still has a known length.
                let start = (try? node.int("start", default: 0)) ?? 0
                guard start >= 0, let end = try? node.int("end"), end >= start else { return nil }
                return [Int?](repeating: nil, count: end - start)
            }
            let rank = dims.count
            func clamp(_ axis: Int) -> Int { min(max(axis < 0 ? axis + rank : axis, 0), rank) }
            let start = clamp((try? node.int("start", default: 0)) ?? 0)
            let end = clamp((try? node.int("end", default: rank)) ?? rank)
            return start < end ? Array(dims[start..<end]) : []
        case "Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten":
            return fold(node.inputs[0])
        case "Gather":
            guard (try? node.int("axis", default: 0)) == 0, let indices = constantInts(node.inputs[1]) else { return nil }
            // `Gather(Shape(x), i)` of an x of unknown rank: one unknown element per index.
            guard let data = fold(node.inputs[0]) else { return [Int?](repeating: nil, count: indices.count) }
            var result: [Int?] = []
            for index in indices {
                let position = index < 0 ? index + data.count : index
                guard data.indices.contains(position) else { return nil }
                result.append(data[position])
            }
            return result
        case "Slice" where node.inputs.count >= 3:
            guard let data = fold(node.inputs[0]), let starts = constantInts(node.inputs[1]),
                  let ends = constantInts(node.inputs[2]), starts.count == 1, ends.count == 1 else { return nil }
            if node.inputs.count > 3, !node.inputs[3].isEmpty, constantInts(node.inputs[3]).map({ $0 == [0] || $0 == [-1] }) != true {
                return nil
            }
            let step = node.inputs.count > 4 && !node.inputs[4].isEmpty ? constantInts(node.inputs[4]) : [1]
            guard let step, step.count == 1, step[0] != 0 else { return nil }
            return sliceIndices(size: data.count, start: starts[0], end: ends[0], step: step[0]).map { data[$0] }
        case "Concat":
            var result: [Int?] = []
            for input in node.inputs {
                guard let part = fold(input) else { return nil }
                result += part
            }
            return result
        case "Add", "Sub", "Mul", "Div", "Max", "Min":
            guard node.inputs.count == 2, let lhs = fold(node.inputs[0]), let rhs = fold(node.inputs[1]),
                  lhs.count == rhs.count || lhs.count == 1 || rhs.count == 1 else { return nil }
            let count = max(lhs.count, rhs.count)
            return (0..<count).map { index -> Int? in
                guard let a = lhs[lhs.count == 1 ? 0 : index], let b = rhs[rhs.count == 1 ? 0 : index] else { return nil }
                switch node.opType {
                case "Add": return a + b
                case "Sub": return a - b
                case "Mul": return a * b
                case "Div": return b == 0 ? nil : a / b  // integer Div truncates, as onnxruntime's does
                case "Max": return max(a, b)
                default: return min(a, b)
                }
            }
        default:
            return nil
        }
    }
}
