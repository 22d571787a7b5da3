import ONNXGraph

/// The elementwise maximum of one or more tensors with numpy broadcasting (ONNX `Max`).
///
/// A NaN in any input makes that element NaN, as in numpy's `maximum` and onnxruntime. uint64 values (held as
/// `Int64` bit patterns) compare as unsigned.
///
/// Backward: each input's gradient is `dMax` where that input is the maximum, 0 elsewhere (summed over the axes
/// it was broadcast along); inputs tied for the maximum share `dMax` equally, as in `torch.maximum`.
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

extension Max: DifferentiableOperator {
    // dX_i = Σ_broadcast dMax · [X_i = Max] / #{j : X_j = Max}  (tied inputs share the gradient equally)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let maximum = try context.output(0), dMax = context.outputGradient()
        guard maximum.storage.kind == .float else { return context.inputs.map { _ in nil } }
        // Per input, 1 where it is the maximum (on the output's shape), and how many inputs are there.
        var chosen: [Tensor?] = []
        var ties: Tensor?
        for input in context.inputs {
            guard let input else { chosen.append(nil); continue }
            let indicator = try combine(maximum, input, EqualityIndicator.self)
            chosen.append(indicator)
            ties = try ties.map { try addGradients($0, indicator) } ?? indicator
        }
        guard let ties else { return context.inputs.map { _ in nil } }
        let share = try combine(dMax, ties, SharedGradient.self)
        return try context.inputs.indices.map { index throws(KernelError) -> Tensor? in
            guard context.wants(index), let input = context.inputs[index], let indicator = chosen[index] else {
                return nil
            }
            return try reduceGradient(combine(share, indicator, Product.self), to: input.shape)
        }
    }

    /// `(dMax, ties) ↦ dMax / ties`: each tied input's share; 0 where no input equals the maximum (a NaN).
    private enum SharedGradient: BinaryKernel {
        static func apply(_ dMax: Float, _ ties: Float) -> Float { ties == 0 ? 0 : dMax / ties }
    }
}
