import ONNXGraph

/// Permutes the axes: output axis `i` is input axis `perm[i]` (reversed when `perm` is absent). A strided copy
/// whose inner runs stay contiguous while the last axis stays last, and which copies in tiles when it moves.
///
/// Backward: `dX = transpose(dY, inverse(perm))`.
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
        return [try transposed(input, perm: permutation(for: input))]
    }

    /// `perm` for `input`, the reversed axes when absent.
    private func permutation(for input: Tensor) throws(KernelError) -> [Int] {
        let perm = perm ?? Array((0..<input.rank).reversed())
        guard perm.count == input.rank else {
            throw KernelError("Transpose perm \(perm) does not fit an input of shape \(input.shape)")
        }
        return perm
    }
}

extension Transpose: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = transpose(dY, inverse(perm)), inverse(perm)[perm[i]] = i
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil] }
        let rank = try context.inputShape(0).count
        let perm = self.perm ?? Array((0..<rank).reversed())
        var inverse = [Int](repeating: 0, count: perm.count)
        for (outputAxis, inputAxis) in perm.enumerated() { inverse[inputAxis] = outputAxis }
        return [try transposed(context.outputGradient(), perm: inverse)]
    }
}
