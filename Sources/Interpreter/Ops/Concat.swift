import ONNXGraph

/// Joins tensors along `axis`; every other dimension must match. Operands with a zero-size axis (an empty KV
/// cache `[batch, heads, 0, headDim]`) contribute nothing.
///
/// Backward: each operand gets its own rows of `dY` along `axis`.
struct Concat: Operator {
    static let opType = "Concat"
    static let sinceVersions = [13]

    /// The axis to join along, possibly negative.
    let axis: Int

    init(node: Node, version: Int) throws {
        guard let axis = try node.int("axis") else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "axis", reason: "is required")
        }
        self.axis = axis
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let tensors = inputs.compactMap { $0 }
        guard let first = tensors.first else { throw KernelError("Concat needs at least one input") }
        let axis = try resolveAxis(self.axis, in: first.shape)
        for tensor in tensors {
            let matches = tensor.rank == first.rank
                && (0..<first.rank).allSatisfy { $0 == axis || tensor.shape[$0] == first.shape[$0] }
            guard matches else {
                throw KernelError("Concat along axis \(self.axis) needs the other dimensions to match, got shapes "
                    + tensors.map { "\($0.shape)" }.joined(separator: ", "))
            }
        }
        return [try concatenated(tensors, along: axis)]
    }
}

extension Concat: DifferentiableOperator {
    // dX_i = dY[..., offset_i ..< offset_i + n_i, ...] along axis, offset_i = n_0 + ... + n_(i-1)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard let first = context.inputs.compactMap({ $0 }).first else { return context.inputs.map { _ in nil } }
        let axis = try resolveAxis(self.axis, in: first.shape)
        let dY = context.outputGradient()
        var offset = 0
        return try context.inputs.enumerated().map { index, input throws(KernelError) -> Tensor? in
            guard let input else { return nil }
            let rows = offset..<(offset + input.shape[axis])
            offset = rows.upperBound
            return context.wants(index) ? try part(of: dY, along: axis, rows) : nil
        }
    }
}
