import ONNXGraph

/// The elementwise maximum of one or more tensors with numpy broadcasting (ONNX `Max`).
///
/// A NaN in any input makes that element NaN, as in numpy's `maximum` and onnxruntime.
///
/// Backward: each input's gradient is `dMax` where that input is the maximum, 0 elsewhere (summed over the axes
/// it was broadcast along).
struct Max: Operator {
    static let opType = "Max"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let operands = inputs.compactMap { $0 }
        guard var result = operands.first else { throw KernelError("Max needs at least one input") }
        for operand in operands.dropFirst() {
            try requireSameType(result, operand, Self.opType)
            if case .bool = operand.storage { throw KernelError("Max is not defined for bool inputs") }
            let unsigned = operand.dataType == .uint64
            // uint64 is compared with the sign bit flipped (see `unsignedOrdered`), and flipped back afterwards.
            let left = unsigned ? result.flippingSignBit() : result, right = unsigned ? operand.flippingSignBit() : operand
            result = try broadcastArithmetic(left, right, Self.opType,
                                             float: { $0 >= $1 || $0.isNaN ? $0 : $1 }, integer: { Swift.max($0, $1) })
            if unsigned { result = result.flippingSignBit() }
        }
        if case .bool = result.storage { throw KernelError("Max is not defined for bool inputs") }
        return [result]
    }
}

extension Tensor {
    /// An integer tensor with each value's sign bit flipped (see `unsignedOrdered`).
    fileprivate func flippingSignBit() -> Tensor {
        Tensor(shape: shape, int64s: unsignedOrdered(int64s, dataType), dataType: dataType)
    }
}
