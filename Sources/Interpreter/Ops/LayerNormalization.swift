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
/// Backward, with `x̂ = (X - Mean) · InvStdDev` and `g = dY · Scale`, per row of `D`:
/// `dX = InvStdDev · (g - mean(g) - x̂ · mean(g · x̂))`, `dScale = Σ_rows dY · x̂`, `dB = Σ_rows dY` (reduced to the
/// shapes of Scale and B); where the outputs Mean and InvStdDev are read too, `dX` gains
/// `dMean / D - dInvStdDev · InvStdDev² · x̂ / D`. Mean and InvStdDev are the saved outputs.
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

extension LayerNormalization: DifferentiableOperator {
    // Per row of D, with x̂ = (X − Mean) · InvStdDev and g = dY · Scale:
    //   dX = InvStdDev · (g − mean(g) − x̂ · mean(g · x̂)) + dMean / D − dInvStdDev · InvStdDev² · x̂ / D
    //   dScale = Σ_rows dY · x̂, dB = Σ_rows dY, each reduced to its input's shape
    // (dMean and dInvStdDev only where those outputs are read: ∂Mean/∂X = 1/D, ∂InvStdDev/∂X = −InvStdDev² x̂/D).
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let input = try context.input(0), scale = try context.input(1), bias = context.inputs.optional(2)
        guard case .float(let x) = input.storage, case .float(let dy) = context.outputGradient(0).storage else {
            throw KernelError("LayerNormalization gradient needs a floating-point X, got \(input.dataType)")
        }
        let axis = try resolveAxis(self.axis, in: input.shape)
        let normalizedShape = Array(input.shape[axis...])
        let rowLength = normalizedShape.reduce(1, *), rows = input.shape[..<axis].reduce(1, *)
        let scaleRow = try Self.row(scale, "Scale", input, normalizedShape)
        let (means, inverseDeviations) = statistics(context, x, rows: rows, rowLength: rowLength)
        // Gradients reaching the optional outputs Mean and InvStdDev, one per row.
        func rowGradient(_ index: Int) -> [Float]? {
            guard index < context.outputGradients.count, let gradient = context.outputGradients[index],
                  case .float(let values) = gradient.storage, values.count == rows else { return nil }
            return values
        }
        let dMeans = rowGradient(1), dInverseDeviations = rowGradient(2)

        var dX: Tensor?
        if context.wants(0) {
            let values = x.isEmpty ? [] : [Float](unsafeUninitializedCapacity: x.count) { out, initialized in
                x.withUnsafeBufferPointer { x in
                    dy.withUnsafeBufferPointer { dy in
                        scaleRow.withUnsafeBufferPointer { scale in
                            Self.inputGradient(
                                x.baseAddress!, dy.baseAddress!, scale.baseAddress!, out.baseAddress!,
                                rows: rows, rowLength: rowLength, means: means, inverseDeviations: inverseDeviations,
                                dMeans: dMeans, dInverseDeviations: dInverseDeviations)
                        }
                    }
                }
                initialized = x.count
            }
            dX = Tensor(shape: input.shape, floats: values, dataType: input.dataType)
        }
        var dScale: Tensor?, dBias: Tensor?
        if context.wants(1) {
            let sums = Self.columnSums(x, dy, rows: rows, rowLength: rowLength, means: means,
                                       inverseDeviations: inverseDeviations, normalized: true)
            dScale = try Self.parameterGradient(sums, normalizedShape, to: scale)
        }
        if let bias, context.wants(2) {
            let sums = Self.columnSums(x, dy, rows: rows, rowLength: rowLength, means: means,
                                       inverseDeviations: inverseDeviations, normalized: false)
            dBias = try Self.parameterGradient(sums, normalizedShape, to: bias)
        }
        return [dX, dScale, dBias]
    }

    /// Each row's mean and 1/σ: the saved outputs `Mean` and `InvStdDev`, or recomputed from X as `run` computes
    /// them when they were not saved.
    private func statistics(
        _ context: GradientContext, _ x: [Float], rows: Int, rowLength: Int
    ) -> (means: [Float], inverseDeviations: [Float]) {
        if context.outputs.count >= 3, case .float(let means)? = context.outputs[1]?.storage,
           case .float(let inverseDeviations)? = context.outputs[2]?.storage,
           means.count == rows, inverseDeviations.count == rows {
            return (means, inverseDeviations)
        }
        var means = [Float](repeating: 0, count: rows), inverseDeviations = [Float](repeating: 0, count: rows)
        guard !x.isEmpty else { return (means, inverseDeviations) }
        let epsilon = self.epsilon, count = Float(rowLength)
        x.withUnsafeBufferPointer { x in
            means.withUnsafeMutableBufferPointer { means in
                inverseDeviations.withUnsafeMutableBufferPointer { inverseDeviations in
                    let xBase = x.baseAddress!, meanBase = means.baseAddress!
                    let inverseBase = inverseDeviations.baseAddress!
                    forEachRowChunk(rows: rows, rowLength: rowLength) { range in
                        for row in range {
                            let input = xBase + row * rowLength
                            let mean = vectorSum(input, rowLength) / count
                            let variance = vectorSquaredDeviationSum(input, rowLength, center: mean) / count
                            meanBase[row] = mean
                            inverseBase[row] = 1 / (variance + epsilon).squareRoot()
                        }
                    }
                }
            }
        }
        return (means, inverseDeviations)
    }

    /// dX for `rows` rows of `rowLength`, parallel over rows: `dX = σ⁻¹ · g − c₀ − c₁ · x̂` with
    /// `c₀ = σ⁻¹ · mean(g) − dMean / D` and `c₁ = σ⁻¹ · mean(g · x̂) + dInvStdDev · σ⁻² / D`.
    private static func inputGradient(
        _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ scale: UnsafePointer<Float>,
        _ dx: UnsafeMutablePointer<Float>, rows: Int, rowLength: Int, means: [Float], inverseDeviations: [Float],
        dMeans: [Float]?, dInverseDeviations: [Float]?
    ) {
        let count = Float(rowLength)
        forEachRowChunk(rows: rows, rowLength: rowLength) { range in
            for row in range {
                let input = x + row * rowLength, dOutput = dy + row * rowLength, dInput = dx + row * rowLength
                let mean = means[row], inverse = inverseDeviations[row]
                let (sumG, sumGNormalized) = rowSums(input, dOutput, scale, rowLength, mean: mean, inverse: inverse)
                let c0 = inverse * sumG / count - (dMeans?[row] ?? 0) / count
                let c1 = inverse * sumGNormalized / count + (dInverseDeviations?[row] ?? 0) * inverse * inverse / count
                for k in 0..<rowLength {
                    let normalized = (input[k] - mean) * inverse
                    dInput[k] = inverse * dOutput[k] * scale[k] - c0 - c1 * normalized
                }
            }
        }
    }

    /// `(Σ g, Σ g · x̂)` over one row, `g = dY · Scale`, with eight accumulators each so that it vectorises.
    @inline(__always)
    private static func rowSums(
        _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ scale: UnsafePointer<Float>, _ count: Int,
        mean: Float, inverse: Float
    ) -> (Float, Float) {
        var sumLanes = SIMD8<Float>.zero, productLanes = SIMD8<Float>.zero
        let centers = SIMD8<Float>(repeating: mean)
        let rawX = UnsafeRawPointer(x), rawDy = UnsafeRawPointer(dy), rawScale = UnsafeRawPointer(scale)
        var index = 0
        while index + 8 <= count {
            let g = rawDy.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
                * rawScale.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
            sumLanes += g
            productLanes += g * (rawX.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self) - centers)
            index += 8
        }
        var sum = sumLanes.sum(), product = productLanes.sum()
        while index < count {
            let g = dy[index] * scale[index]
            sum += g
            product += g * (x[index] - mean)
            index += 1
        }
        return (sum, product * inverse)
    }

    /// `Σ_rows dY · x̂` (`normalized`) or `Σ_rows dY`, one value per row position, parallel over columns.
    private static func columnSums(
        _ x: [Float], _ dy: [Float], rows: Int, rowLength: Int, means: [Float], inverseDeviations: [Float],
        normalized: Bool
    ) -> [Float] {
        var sums = [Float](repeating: 0, count: rowLength)
        guard rows > 0 else { return sums }
        x.withUnsafeBufferPointer { x in
            dy.withUnsafeBufferPointer { dy in
                sums.withUnsafeMutableBufferPointer { sums in
                    let xBase = x.baseAddress!, dyBase = dy.baseAddress!, sumBase = sums.baseAddress!
                    Parallel.forEachChunk(rowLength, minimumPerThread: max(1, 32_768 / rows)) { columns in
                        for row in 0..<rows {
                            let input = xBase + row * rowLength, dOutput = dyBase + row * rowLength
                            if normalized {
                                let mean = means[row], inverse = inverseDeviations[row]
                                for k in columns { sumBase[k] += dOutput[k] * (input[k] - mean) * inverse }
                            } else {
                                for k in columns { sumBase[k] += dOutput[k] }
                            }
                        }
                    }
                }
            }
        }
        return sums
    }

    /// A gradient over one row (`normalizedShape`) summed to `parameter`'s shape, which broadcasts to the row
    /// after dropping its leading 1s (as `row` reads it).
    private static func parameterGradient(
        _ sums: [Float], _ normalizedShape: [Int], to parameter: Tensor
    ) throws(KernelError) -> Tensor {
        let gradient = Tensor(shape: normalizedShape, floats: sums, dataType: parameter.dataType)
        if parameter.shape == normalizedShape { return gradient }
        let shape = Array(parameter.shape.drop { $0 == 1 })
        return try reduceGradient(gradient, to: shape).reshaped(parameter.shape)
    }
}
