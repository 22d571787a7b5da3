import ONNXGraph

/// `Pad` in `constant` mode (ONNX Pad-11/13/18/19/21/23, https://onnx.ai/onnx/operators/onnx__Pad.html): inputs
/// data, pads (int64 `[2·n]`: the `n` begin amounts, then the `n` end amounts), optional constant_value (a scalar of
/// data's type, default 0) and, from Pad-18, optional axes (the `n` axes the pads apply to; all axes when omitted).
/// Output dimension `d` is `begin[d] + size[d] + end[d]`; a negative amount removes elements. `edge`, `reflect` and
/// `wrap` are refused at load. LoRA uses it to place a part's `Bᵀ [r, part]` in the columns of a packed projection.
///
/// Backward: `dData[i] = dY[i + begin]` (removed elements get zero); `dConstant = Σ dY` over the padded positions.
struct Pad: Operator {
    static let opType = "Pad"
    static let sinceVersions = [11, 13, 18, 19, 21, 23]

    init(node: Node, version: Int) throws {
        let mode = try node.string("mode", default: "constant")
        guard mode == "constant" else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "mode",
                                              reason: "is '\(mode)'; only 'constant' is supported")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        let (begins, shape) = try Self.geometry(data.shape, inputs)
        let count = shape.reduce(1, *)
        switch data.storage {
        case .float(let values):
            let fill = Float(try Self.constant(inputs))
            var result = [Float](repeating: fill, count: count)
            Self.copy(from: data.shape, to: shape, begins: begins) { result[$1] = values[$0] }
            return [Tensor(shape: shape, floats: result, dataType: data.dataType)]
        case .int64, .bytes:
            // Bytes (uint8, int8) widened; the result is narrowed back to the data's type.
            let values = data.int64s
            let fill = Int64(try Self.constant(inputs))
            var result = [Int64](repeating: fill, count: count)
            Self.copy(from: data.shape, to: shape, begins: begins) { result[$1] = values[$0] }
            return [Tensor(shape: shape, int64s: result, dataType: data.dataType)]
        case .bool(let values):
            let fill = try Self.constant(inputs) != 0
            var result = [Bool](repeating: fill, count: count)
            Self.copy(from: data.shape, to: shape, begins: begins) { result[$1] = values[$0] }
            return [Tensor(shape: shape, bools: result)]
        }
    }

    /// constant_value, 0 when omitted (an empty name, or an empty tensor).
    static func constant(_ inputs: [Tensor?]) throws(KernelError) -> Double {
        guard let value = inputs.optional(2), value.count > 0 else { return 0 }
        return try value.scalarValue("Pad constant_value")
    }

    /// The begin amount per axis and the output's shape.
    static func geometry(_ shape: [Int], _ inputs: [Tensor?]) throws(KernelError) -> (begins: [Int], shape: [Int]) {
        let pads = try inputs.required(1).intValues("Pad pads")
        var axes = Array(0..<shape.count)
        if let given = inputs.optional(3) { axes = try given.intValues("Pad axes") }
        guard pads.count == 2 * axes.count else {
            throw KernelError("Pad needs 2 pads per padded axis: \(pads.count) pads for \(axes.count) axes of an input of shape \(shape)")
        }
        var begins = [Int](repeating: 0, count: shape.count), ends = begins
        for (index, requested) in axes.enumerated() {
            let axis = try resolveAxis(requested, in: shape, "Pad axis")
            begins[axis] = pads[index]
            ends[axis] = pads[index + axes.count]
        }
        let output = zip(shape.indices, shape).map { begins[$0] + $1 + ends[$0] }
        guard output.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("Pad pads \(pads) remove more than the input of shape \(shape) holds")
        }
        return (begins, output)
    }

    /// Calls `body(inputOffset, outputOffset)` for every input element that lands inside the output.
    static func copy(from input: [Int], to output: [Int], begins: [Int], _ body: (Int, Int) -> Void) {
        let outputStrides = contiguousStrides(output)
        let count = input.reduce(1, *)
        guard count > 0, output.reduce(1, *) > 0 else { return }
        var position = [Int](repeating: 0, count: input.count)
        for inputOffset in 0..<count {
            var outputOffset = 0, inside = true
            for axis in input.indices {
                let target = position[axis] + begins[axis]
                if target < 0 || target >= output[axis] { inside = false; break }
                outputOffset += target * outputStrides[axis]
            }
            if inside { body(inputOffset, outputOffset) }
            var axis = input.count - 1
            while axis >= 0 {
                position[axis] += 1
                if position[axis] < input[axis] { break }
                position[axis] = 0
                axis -= 1
            }
        }
    }
}

extension Pad: DifferentiableOperator {
    // dData[i] = dY[i + begin];  dConstant = Σ dY over the padded positions (every output not copied from data).
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        guard context.wants(0) || context.wants(2) else { return result }
        let shape = try context.inputShape(0)
        let (begins, outputShape) = try Self.geometry(shape, context.inputs)
        let dY = context.outputGradient()
        guard case .float(let upstream) = dY.storage, dY.shape == outputShape else {
            throw KernelError("Pad's output gradient has shape \(dY.shape), expected \(outputShape)")
        }
        var dData = [Float](repeating: 0, count: shape.reduce(1, *))
        var copied = 0.0
        Self.copy(from: shape, to: outputShape, begins: begins) {
            dData[$0] = upstream[$1]
            copied += Double(upstream[$1])
        }
        if context.wants(0) { result[0] = Tensor(shape: shape, floats: dData, dataType: try context.inputType(0)) }
        if context.wants(2) {
            let padded = upstream.reduce(0.0) { $0 + Double($1) } - copied
            result[2] = Tensor(shape: try context.inputShape(2), floats: [Float(padded)], dataType: try context.inputType(2))
        }
        return result
    }

    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: [1, 3], outputs: []) }
}
