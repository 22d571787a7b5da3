import ONNXGraph

/// Layer normalisation over the axes from `axis` on (ONNX `LayerNormalization`, opset 17; Ba et al.,
/// arXiv:1607.06450):
///
///     Mean      = mean(X, axes axis...)                          // [N, 1...] with N = X.shape[..<axis]
///     InvStdDev = 1 / √(mean((X - Mean)², axes axis...) + epsilon)
///     Y         = (X - Mean) · InvStdDev · Scale + B
///
/// X is viewed as `[N, D]` rows, `D` the product of `X.shape[axis...]`; `Scale` and `B` broadcast to
/// `X.shape[axis...]`. Mean and variance are computed in `Float` in two passes over each row (no `E[x²] - E[x]²`
/// cancellation). The optional outputs `Mean` and `InvStdDev` have shape `X.shape[..<axis] + [1, ...]` and the
/// type `stash_type` (only float32, the default, is supported).
///
/// Backward, with `x̂ = (X - Mean) · InvStdDev` and `g = dY · Scale`, per row:
/// `dX = InvStdDev · (g - mean(g) - x̂ · mean(g · x̂))`, `dScale = Σ_rows dY · x̂`, `dB = Σ_rows dY`.
struct LayerNormalization: Operator {
    static let opType = "LayerNormalization"
    static let sinceVersions = [17]

    /// The ONNX attributes `axis` (possibly negative) and `epsilon`.
    let axis: Int
    let epsilon: Float

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: -1)
        epsilon = try node.float("epsilon", default: 1e-5)
        let stashType = try node.int("stash_type", default: Int(DataType.float.rawValue))
        guard stashType == Int(DataType.float.rawValue) else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "stash_type",
                                              reason: "is \(stashType); only 1 (float32) is supported")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0), scale = try inputs.required(1), bias = inputs.optional(2)
        guard case .float(let x) = input.storage else {
            throw KernelError("LayerNormalization needs a floating-point X, got \(input.dataType)")
        }
        let axis = try resolveAxis(self.axis, in: input.shape)
        let normalizedShape = Array(input.shape[axis...])
        let rowLength = normalizedShape.reduce(1, *), rows = input.shape[..<axis].reduce(1, *)
        guard rowLength > 0 else {
            throw KernelError("LayerNormalization: X.shape[\(axis)...] = \(normalizedShape) is empty")
        }
        let scaleRow = try Self.row(scale, "Scale", input, normalizedShape)
        let biasRow = try bias.map { try Self.row($0, "B", input, normalizedShape) }

        var means = [Float](repeating: 0, count: rows), inverseDeviations = [Float](repeating: 0, count: rows)
        let y = [Float](unsafeUninitializedCapacity: x.count) { out, initialized in
            x.withUnsafeBufferPointer { x in
                means.withUnsafeMutableBufferPointer { means in
                    inverseDeviations.withUnsafeMutableBufferPointer { inverseDeviations in
                        scaleRow.withUnsafeBufferPointer { scale in
                            (biasRow ?? []).withUnsafeBufferPointer { bias in
                                normalize(x.baseAddress!, out.baseAddress!, rows: rows, rowLength: rowLength,
                                          scale: scale.baseAddress!, bias: biasRow == nil ? nil : bias.baseAddress,
                                          means: means.baseAddress!, inverseDeviations: inverseDeviations.baseAddress!)
                            }
                        }
                    }
                }
            }
            initialized = x.count
        }
        let statisticsShape = Array(input.shape[..<axis]) + [Int](repeating: 1, count: input.rank - axis)
        return [
            Tensor(shape: input.shape, floats: roundedToPrecision(y, input.dataType), dataType: input.dataType),
            Tensor(shape: statisticsShape, floats: means),
            Tensor(shape: statisticsShape, floats: inverseDeviations),
        ]
    }

    /// Normalises `rows` rows of `rowLength` from `x` into `y`, recording each row's mean and 1/σ.
    private func normalize(
        _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, rowLength: Int,
        scale: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        means: UnsafeMutablePointer<Float>, inverseDeviations: UnsafeMutablePointer<Float>
    ) {
        let epsilon = self.epsilon, count = Float(rowLength)
        forEachRowChunk(rows: rows, rowLength: rowLength) { range in
            for row in range {
                let input = x + row * rowLength, output = y + row * rowLength
                let mean = vectorSum(input, rowLength) / count
                let variance = vectorSquaredDeviationSum(input, rowLength, center: mean) / count
                let inverse = 1 / (variance + epsilon).squareRoot()
                if let bias {
                    for k in 0..<rowLength { output[k] = (input[k] - mean) * inverse * scale[k] + bias[k] }
                } else {
                    for k in 0..<rowLength { output[k] = (input[k] - mean) * inverse * scale[k] }
                }
                means[row] = mean
                inverseDeviations[row] = inverse
            }
        }
    }

    /// `parameter` (Scale or B) broadcast to one row of `normalizedShape`, checked against X's type.
    private static func row(
        _ parameter: Tensor, _ name: String, _ input: Tensor, _ normalizedShape: [Int]
    ) throws(KernelError) -> [Float] {
        guard parameter.dataType == input.dataType, case .float(let values) = parameter.storage else {
            throw KernelError(
                "LayerNormalization: \(name) must have X's type \(input.dataType), got \(parameter.dataType)")
        }
        if parameter.shape == normalizedShape { return values }
        // Leading 1s do not change which row element a value applies to ([1, D] serves a [D] row).
        let shape = Array(parameter.shape.drop { $0 == 1 })
        guard (try? broadcastShape([normalizedShape, shape])) == normalizedShape else {
            throw KernelError("LayerNormalization: \(name) of shape \(parameter.shape) does not broadcast to "
                              + "X.shape[axis...] = \(normalizedShape)")
        }
        return try expanded(parameter.reshaped(shape), to: normalizedShape).floats
    }
}
