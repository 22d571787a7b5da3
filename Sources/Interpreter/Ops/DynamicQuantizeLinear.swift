import ONNXGraph

/// ONNX `DynamicQuantizeLinear` (opset 11, https://onnx.ai/onnx/operators/onnx__DynamicQuantizeLinear.html): a float
/// tensor quantised to uint8 with a scale and zero point computed from its own range, as onnxruntime's dynamic
/// quantizer writes it before every `MatMulInteger` (onnx-community `model_int8`, `model_uint8`, `model_quantized`).
///
///     min = min(0, min(x)), max = max(0, max(x))       (the range always holds 0, so 0 is exact)
///     y_scale      = (max − min) / 255                 (1 when max = min, i.e. x all zeros: onnxruntime's CPU kernel,
///                                                       `core/util/qmath.h` GetQuantizationParameter; the spec divides
///                                                       by zero there)
///     y_zero_point = round(clamp(0 − min / y_scale, 0, 255))
///     y            = clamp(round(x / y_scale) + y_zero_point, 0, 255)
///
/// `round` is half to even in both places, as the spec says and onnxruntime does (`RoundHalfToEven`, and MLAS's
/// QuantizeLinear converting `x / scale` with the nearest-even rounding mode). Outputs: y uint8 (x's shape), y_scale
/// float scalar, y_zero_point uint8 scalar.
///
/// No gradient rule: y is an integer. A DynamicQuantizeLinear feeding a quantised MatMul is rewritten with it into one
/// `DynamicQuantizeMatMul` (`GraphOptimizer.fuseDynamicQuantizedMatMuls`), which carries the straight-through gradient
/// to x; a trainable value reaching one that is not part of such a projection is an error naming the node, rather than
/// a gradient that silently leaves out the integer path.
struct DynamicQuantizeLinear: Operator {
    static let opType = "DynamicQuantizeLinear"
    static let sinceVersions = [11]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let x = try inputs.required(0)
        guard case .float(let values) = x.storage, x.dataType == .float else {
            throw KernelError("x must be float32, got \(x.dataType)")
        }
        let quantized = DynamicQuantization(values)
        return [
            quantizedTensor(shape: x.shape, values: quantized.values(values), dataType: .uint8),
            Tensor(shape: [], floats: [quantized.scale]),
            quantizedTensor(shape: [], values: [quantized.zeroPoint], dataType: .uint8),
        ]
    }
}

/// The uint8 scale and zero point DynamicQuantizeLinear derives from a tensor's range (see there), and the
/// quantisation of values with them; shared with the fused `DynamicQuantizeMatMul`, so that both give the same bytes.
struct DynamicQuantization {
    let scale: Float
    let zeroPoint: Int32

    init(_ values: [Float]) {
        var low: Float = 0, high: Float = 0  // the range always includes zero
        for value in values {
            low = Swift.min(low, value)
            high = Swift.max(high, value)
        }
        let scale: Float = high == low ? 1 : (high - low) / 255
        let initial = 0 - low / scale
        self.scale = scale
        zeroPoint = Int32(Swift.max(0, Swift.min(255, initial)).rounded(.toNearestOrEven))
    }

    /// `clamp(round(x / scale) + zeroPoint, 0, 255)` per value.
    func values(_ x: [Float]) -> [Int32] {
        let (scale, zeroPoint) = (scale, Float(zeroPoint))
        return x.map { value in
            // Clamped before converting, so that an infinite or huge x cannot trap. A NaN in x makes the scale NaN
            // and every value 0 here; what onnxruntime gives then was not checked.
            let shifted = (value / scale).rounded(.toNearestOrEven) + zeroPoint
            return shifted.isNaN ? 0 : Int32(Swift.max(0, Swift.min(255, shifted)))
        }
    }
}
