import ONNXGraph

/// The elementwise maximum of one or more tensors with numpy broadcasting (ONNX `Max`).
///
/// A NaN in any input makes that element NaN, as in numpy's `maximum` and onnxruntime. uint64 values (held as
/// `Int64` bit patterns) compare as unsigned.
///
/// Backward: each input's gradient is `dMax` where that input is the maximum, 0 elsewhere (summed over the axes
/// it was broadcast along).
struct Max: ArithmeticOperator {
    static let opType = "Max"
    static let sinceVersions = [13]

    static func float(_ a: Float, _ b: Float) -> Float { a >= b || a.isNaN ? a : b }
    static func integer(_ a: Int64, _ b: Int64) -> Int64 { Swift.max(a, b) }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let operands = inputs.compactMap { $0 }
        guard var result = operands.first else { throw KernelError("Max needs at least one input") }
        if case .bool = result.storage { throw KernelError("Max is not defined for bool inputs") }
        // uint64 is compared with the sign bit flipped (see `unsignedOrdered`), and flipped back at the end.
        let unsigned = result.dataType == .uint64
        if unsigned { result = result.flippingSignBit() }
        for operand in operands.dropFirst() {
            result = try broadcastArithmetic(result, unsigned ? operand.flippingSignBit() : operand, Self.self)
        }
        return [unsigned ? result.flippingSignBit() : result]
    }
}

extension Tensor {
    /// An integer tensor with each value's sign bit flipped (see `unsignedOrdered`).
    fileprivate func flippingSignBit() -> Tensor {
        guard case .int64(let values) = storage else { return self }
        return Tensor(shape: shape, int64s: unsignedOrdered(values, dataType), dataType: dataType)
    }
}
