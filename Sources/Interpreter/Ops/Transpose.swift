import ONNXGraph

/// Permutes the axes: output axis `i` is input axis `perm[i]` (reversed when `perm` is absent). A strided copy
/// whose inner runs stay contiguous while the last axis stays last, and which copies in tiles when it moves.
struct Transpose: Operator {
    static let opType = "Transpose"
    static let sinceVersions = [13, 21]

    /// The permutation, nil for "reverse the axes".
    let perm: [Int]?

    init(node: Node, version: Int) throws {
        perm = try node.ints("perm")
        if let perm, perm.sorted() != Array(0..<perm.count) {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "perm",
                                              reason: "\(perm) is not a permutation of 0..<\(perm.count)")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let perm = perm ?? Array((0..<input.rank).reversed())
        guard perm.count == input.rank else {
            throw KernelError("Transpose perm \(perm) does not fit an input of shape \(input.shape)")
        }
        // Moving only dimensions of size 1 leaves the order of the values unchanged.
        let moved = perm.enumerated().filter { input.shape[$0.element] != 1 }.map(\.element)
        let shape = perm.map { input.shape[$0] }
        if moved == moved.sorted() { return [input.reshaped(shape)] }
        let strides = contiguousStrides(input.shape)
        let view = StridedView(shape: shape, strides: perm.map { strides[$0] })
        return [try moveElements(from: [input], shape: shape, dataType: input.dataType, view)]
    }
}
