import ONNXGraph

/// ONNX `DequantizeLinear` (opsets 10, 13, 19, 21: https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html):
/// `y = (x − x_zero_point) · x_scale`, as onnxruntime's quantizers write it after an int8/uint8 embedding Gather
/// (onnx-community `model_int8`, `model_uint8`, `model_quantized`).
///
/// The scale (and zero point, default 0) is per tensor (a scalar or `[1]`); per axis from opset 13 (1-D, one value
/// per position of `axis`, default 1); or, from opset 21, per block of `block_size` positions along `axis` (the
/// scale has x's rank, with `⌈x.shape[axis] / block_size⌉` there). x is int8, uint8 or int32 here (int4, uint4 and
/// the float8 types are not read by the interpreter). The output has the scale's type.
///
/// Backward: x and the zero point are integers; `dScale[j] = Σ dY · (x − zero_point)` over the elements scale j
/// applies to.
struct DequantizeLinear: Operator {
    static let opType = "DequantizeLinear"
    static let sinceVersions = [10, 13, 19, 21]

    let axis: Int
    let blockSize: Int

    init(node: Node, version: Int) throws {
        axis = version >= 13 ? try node.int("axis", default: 1) : 1
        blockSize = version >= 21 ? try node.int("block_size", default: 0) : 0
        guard blockSize >= 0 else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "block_size",
                                              reason: "= \(blockSize) must not be negative")
        }
        if version >= 23, let outputType = try node.int("output_dtype"), outputType != 0 {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "output_dtype",
                                              reason: "= \(outputType) is not supported; only 0 (the scale's type) is")
        }
    }

    /// For each element of x, the index of the scale (and zero point) it uses.
    private func scaleIndices(_ x: Tensor, _ scale: Tensor) throws(KernelError) -> [Int] {
        if scale.count == 1 { return [Int](repeating: 0, count: x.count) }
        let axis = try resolveAxis(self.axis, in: x.shape)
        let strides = contiguousStrides(x.shape)
        if blockSize == 0 {
            guard scale.rank == 1, scale.count == x.shape[axis] else {
                throw KernelError("a per-axis x_scale must be 1-D with x.shape[\(axis)] = \(x.shape[axis]) values, got \(scale.shape)")
            }
            return (0..<x.count).map { ($0 / strides[axis]) % x.shape[axis] }
        }
        var expected = x.shape
        expected[axis] = (x.shape[axis] + blockSize - 1) / blockSize
        guard scale.shape == expected else {
            throw KernelError("a blocked x_scale must have shape \(expected) (block_size \(blockSize) along axis \(axis)), got \(scale.shape)")
        }
        let scaleStrides = contiguousStrides(expected)
        return (0..<x.count).map { index in
            var offset = 0
            for dimension in x.shape.indices {
                var coordinate = (index / strides[dimension]) % x.shape[dimension]
                if dimension == axis { coordinate /= blockSize }
                offset += coordinate * scaleStrides[dimension]
            }
            return offset
        }
    }

    /// `x − zero_point` per element.
    private func centered(_ inputs: [Tensor?]) throws(KernelError) -> (values: [Float], indices: [Int], scale: Tensor) {
        let x = try inputs.required(0), scale = try inputs.required(1)
        guard let quantized = x.int64Values else {
            throw KernelError("x must be an integer tensor (int8, uint8, int32), got \(x.dataType)")
        }
        guard case .float = scale.storage else { throw KernelError("x_scale must be floating-point, got \(scale.dataType)") }
        let indices = try scaleIndices(x, scale)
        var zeros = [Int64](repeating: 0, count: scale.count)
        if let zeroPoint = inputs.optional(2) {
            guard zeroPoint.shape == scale.shape, let values = zeroPoint.int64Values else {
                throw KernelError("x_zero_point must be an integer tensor of x_scale's shape \(scale.shape), got "
                                  + "\(zeroPoint.dataType)\(zeroPoint.shape)")
            }
            zeros = values
        }
        return (quantized.indices.map { Float(quantized[$0] - zeros[indices[$0]]) }, indices, scale)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let (values, indices, scale) = try centered(inputs)
        let scales = scale.floats
        let y = values.indices.map { values[$0] * scales[indices[$0]] }
        return [Tensor(shape: try inputs.required(0).shape, floats: roundedToPrecision(y, scale.dataType), dataType: scale.dataType)]
    }
}

extension DequantizeLinear: DifferentiableOperator {
    // dScale[j] = Σ_{i uses j} dY[i] · (x[i] − zero_point[j]); nothing for x or the zero point (integers)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        guard context.wants(1) else { return result }
        let (values, indices, scale) = try centered(context.inputs)
        let dY = context.outputGradient().floats
        var dScale = [Float](repeating: 0, count: scale.count)
        for index in values.indices { dScale[indices[index]] += dY[index] * values[index] }
        result[1] = Tensor(shape: scale.shape, floats: dScale, dataType: scale.dataType)
        return result
    }
}
