import ONNXGraph

/// RMS normalisation over the axes from `axis` on: onnxruntime's `SimplifiedLayerNormalization` (registered in the
/// default domain at version 1 although ONNX does not define it; `core/providers/cpu/nn/layer_norm.cc`,
/// `docs/ContribOperators.md`), which onnxruntime-genai's model builder writes for every RMSNorm (Zhang & Sennrich,
/// arXiv:1910.07467):
///
///     InvStdDev = 1 / √(mean(X², axes axis...) + epsilon)            // [N, 1...]
///     Y         = X · InvStdDev · scale
///
/// Inputs X and scale (broadcast to `X.shape[axis...]`); outputs Y and the optional InvStdDev (shape
/// `X.shape[..<axis] + [1, ...]`). `stash_type` must be 1 (float32), as onnxruntime computes.
///
/// Backward per row of D, with `g = dY · scale` and `r = InvStdDev`:
/// `dX = r · g − X · r³ · mean(g · X) − dInvStdDev · r³ · X / D`, `dScale = Σ_rows dY · X · r`.
struct SimplifiedLayerNormalization: Operator {
    static let opType = "SimplifiedLayerNormalization"
    static let sinceVersions = [1]

    let axis: Int
    let epsilon: Float

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: -1)
        epsilon = try node.float("epsilon", default: 1e-5)
        try checkFloat32StashType(node)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let rows = try RMSRows(input, scale: inputs.required(1), axis: axis, opType: Self.opType)
        let (y, inverseDeviations) = rows.normalize(epsilon: epsilon)
        return [Tensor(shape: input.shape, floats: roundedToPrecision(y, input.dataType), dataType: input.dataType),
                Tensor(shape: rows.statisticsShape, floats: inverseDeviations)]
    }
}

extension SimplifiedLayerNormalization: DifferentiableOperator {
    // g = dY · scale, r = InvStdDev: dX = r·g − X·r³·mean(g·X) − dInvStdDev·r³·X/D; dScale = Σ_rows dY·X·r
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let input = try context.input(0), scale = try context.input(1)
        let rows = try RMSRows(input, scale: scale, axis: axis, opType: Self.opType)
        let saved = context.outputs.count > 1 ? context.outputs[1] : nil
        let inverseDeviations = saved.map { $0.count == rows.rows } ?? false
            ? saved!.floats : rows.normalize(epsilon: epsilon).inverseDeviations
        let dInverse = context.outputGradients.count > 1 ? context.outputGradients[1]?.floats : nil
        let (dX, dScale) = rows.gradient(context.outputGradient(0).floats, inverseDeviations: inverseDeviations,
                                         dInverseDeviations: dInverse, wantInput: context.wants(0),
                                         wantScale: context.wants(1))
        return [dX.map { Tensor(shape: input.shape, floats: $0, dataType: input.dataType) },
                try dScale.map { try rows.scaleGradient($0) }]
    }
}

/// `stash_type` other than 1 (float32) is refused: the interpreter computes the statistics in float32 only.
func checkFloat32StashType(_ node: Node) throws {
    let stashType = try node.int("stash_type", default: Int(DataType.float.rawValue))
    guard stashType == Int(DataType.float.rawValue) else {
        throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "stash_type",
                                          reason: "is \(stashType); only 1 (float32) is supported")
    }
}

/// X viewed as `[rows, D]` with its scale broadcast to one row: the RMS normalisation shared by
/// `SimplifiedLayerNormalization` and `SkipSimplifiedLayerNormalization`.
struct RMSRows {
    let x: [Float]
    let scaleTensor: Tensor
    let scaleRow: [Float]
    let rows: Int
    let rowLength: Int
    let normalizedShape: [Int]
    /// `X.shape[..<axis] + [1, ...]`: the shape of InvStdDev.
    let statisticsShape: [Int]

    init(_ input: Tensor, scale: Tensor, axis: Int, opType: String) throws(KernelError) {
        guard case .float(let x) = input.storage, case .float(let scaleValues) = scale.storage else {
            throw KernelError("\(opType) needs floating-point X and scale, got \(input.dataType) and \(scale.dataType)")
        }
        let axis = try resolveAxis(axis, in: input.shape)
        normalizedShape = Array(input.shape[axis...])
        rowLength = normalizedShape.reduce(1, *)
        rows = input.shape[..<axis].reduce(1, *)
        guard rowLength > 0 else { throw KernelError("\(opType): X.shape[\(axis)...] = \(normalizedShape) is empty") }
        statisticsShape = Array(input.shape[..<axis]) + [Int](repeating: 1, count: input.rank - axis)
        self.x = x
        scaleTensor = scale
        if scale.shape == normalizedShape {
            scaleRow = scaleValues
        } else {
            let shape = Array(scale.shape.drop { $0 == 1 })
            guard (try? broadcastShape([normalizedShape, shape])) == normalizedShape else {
                throw KernelError("\(opType): scale of shape \(scale.shape) does not broadcast to X.shape[axis...] = "
                                  + "\(normalizedShape)")
            }
            scaleRow = try expanded(scale.reshaped(shape), to: normalizedShape).floats
        }
    }

    /// `(X · r · scale, r)` with `r = 1/√(mean(X²) + epsilon)` per row.
    func normalize(epsilon: Float) -> (y: [Float], inverseDeviations: [Float]) {
        var y = [Float](repeating: 0, count: x.count), inverse = [Float](repeating: 0, count: rows)
        let (rowLength, count) = (rowLength, Float(rowLength))
        x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                inverse.withUnsafeMutableBufferPointer { inverse in
                    scaleRow.withUnsafeBufferPointer { scale in
                        let (xBase, yBase, inverseBase) = (x.baseAddress!, y.baseAddress!, inverse.baseAddress!)
                        forEachRowChunk(rows: rows, rowLength: rowLength) { range in
                            for row in range {
                                let input = xBase + row * rowLength, output = yBase + row * rowLength
                                let r = 1 / (vectorDot(input, input, rowLength) / count + epsilon).squareRoot()
                                for k in 0..<rowLength { output[k] = input[k] * r * scale[k] }
                                inverseBase[row] = r
                            }
                        }
                    }
                }
            }
        }
        return (y, inverse)
    }

    /// dX and the per-position dScale row (see `SimplifiedLayerNormalization`'s backward).
    func gradient(
        _ dy: [Float], inverseDeviations: [Float], dInverseDeviations: [Float]?, wantInput: Bool, wantScale: Bool
    ) -> (dX: [Float]?, dScaleRow: [Float]?) {
        var dX: [Float]? = nil, dScale: [Float]? = nil
        let (rowLength, count) = (rowLength, Float(rowLength))
        if wantInput {
            var values = [Float](repeating: 0, count: x.count)
            x.withUnsafeBufferPointer { x in
                dy.withUnsafeBufferPointer { dy in
                    values.withUnsafeMutableBufferPointer { dx in
                        scaleRow.withUnsafeBufferPointer { scale in
                            let (xBase, dyBase, dxBase) = (x.baseAddress!, dy.baseAddress!, dx.baseAddress!)
                            forEachRowChunk(rows: rows, rowLength: rowLength) { range in
                                for row in range {
                                    let input = xBase + row * rowLength, dOutput = dyBase + row * rowLength
                                    let dInput = dxBase + row * rowLength
                                    let r = inverseDeviations[row]
                                    var dot: Float = 0
                                    for k in 0..<rowLength { dot += dOutput[k] * scale[k] * input[k] }
                                    let c = r * r * r * (dot / count + (dInverseDeviations?[row] ?? 0) / count)
                                    for k in 0..<rowLength { dInput[k] = r * dOutput[k] * scale[k] - c * input[k] }
                                }
                            }
                        }
                    }
                }
            }
            dX = values
        }
        if wantScale {
            var sums = [Float](repeating: 0, count: rowLength)
            for row in 0..<rows {
                let r = inverseDeviations[row], offset = row * rowLength
                for k in 0..<rowLength { sums[k] += dy[offset + k] * x[offset + k] * r }
            }
            dScale = sums
        }
        return (dX, dScale)
    }

    /// A gradient over one row summed to the scale's own shape.
    func scaleGradient(_ row: [Float]) throws(KernelError) -> Tensor {
        let gradient = Tensor(shape: normalizedShape, floats: row, dataType: scaleTensor.dataType)
        if scaleTensor.shape == normalizedShape { return gradient }
        let shape = Array(scaleTensor.shape.drop { $0 == 1 })
        return try reduceGradient(gradient, to: shape).reshaped(scaleTensor.shape)
    }
}
