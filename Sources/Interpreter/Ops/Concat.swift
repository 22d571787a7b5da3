import ONNXGraph

/// Joins tensors along `axis`; every other dimension must match. Operands with a zero-size axis (an empty KV
/// cache `[batch, heads, 0, headDim]`) contribute nothing.
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
        var shape = first.shape
        shape[axis] = 0
        for tensor in tensors {
            let matches = tensor.rank == first.rank
                && (0..<first.rank).allSatisfy { $0 == axis || tensor.shape[$0] == first.shape[$0] }
            guard matches else {
                throw KernelError("Concat along axis \(self.axis) needs the other dimensions to match, got shapes "
                    + tensors.map { "\($0.shape)" }.joined(separator: ", "))
            }
            shape[axis] += tensor.shape[axis]
        }
        // Joining an empty tensor to one other (the first step of a KV cache) needs no copy.
        let nonEmpty = tensors.filter { $0.count > 0 }
        if nonEmpty.count == 1, tensors.allSatisfy({ $0.storage.kind == first.storage.kind }) {
            return [nonEmpty[0].reshaped(shape)]
        }
        let outerCount = first.shape[..<axis].reduce(1, *)
        let innerCount = first.shape[(axis + 1)...].reduce(1, *)
        let movement = Concatenation(blockSizes: tensors.map { $0.shape[axis] * innerCount }, outerCount: outerCount)
        return [try moveElements(from: tensors, shape: shape, dataType: first.dataType, movement)]
    }
}
