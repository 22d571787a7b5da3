import ONNXGraph

/// Picks entries of `data` along `axis` at `indices` (negative ones count from the end): the output shape is
/// `data.shape[..<axis] + indices.shape + data.shape[(axis + 1)...]`. An embedding lookup is Gather on axis 0.
///
/// Backward: `dData` is zeros with each block of `dY` added back where it was read, so a repeated index sums.
struct Gather: Operator {
    static let opType = "Gather"
    static let sinceVersions = [13]

    /// The axis of `data` indexed, possibly negative.
    let axis: Int

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: 0)
    }

    /// The data, a weight that a tied LM head's product holds packed (`Session.packWeights`): rows are read from
    /// its panels instead of input 0.
    var packedData: PackedWeight?

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let indices = try inputs.required(1)
        if let packedData {
            let positions = try self.positions(indices, axisSize: packedData.n, dataShape: [packedData.n, packedData.k])
            return [Tensor(shape: indices.shape + [packedData.k], floats: packedData.rows(positions),
                           dataType: packedData.dataType)]
        }
        let data = try inputs.required(0)
        let (movement, shape) = try gathering(from: data, at: indices)
        return [try moveElements(from: [data], shape: shape, dataType: data.dataType, movement)]
    }

    /// `indices` as positions along an axis of `axisSize`, negative ones counted from the end.
    private func positions(_ indices: Tensor, axisSize: Int, dataShape: [Int]) throws(KernelError) -> [Int] {
        try indices.intValues("Gather indices").map { index throws(KernelError) -> Int in
            let position = index < 0 ? index + axisSize : index
            guard position >= 0, position < axisSize else {
                throw KernelError("Gather index \(index) is out of range for axis \(self.axis) of data shape \(dataShape)")
            }
            return position
        }
    }

    /// The blocks of `data` the gather reads, in output order, and the output's shape.
    private func gathering(from data: Tensor, at indices: Tensor) throws(KernelError) -> (BlockGather, shape: [Int]) {
        let axis = try resolveAxis(self.axis, in: data.shape)
        let axisSize = data.shape[axis]
        let positions = try self.positions(indices, axisSize: axisSize, dataShape: data.shape)
        let outerCount = data.shape[..<axis].reduce(1, *)
        let innerCount = data.shape[(axis + 1)...].reduce(1, *)
        let shape = Array(data.shape[..<axis]) + indices.shape + Array(data.shape[(axis + 1)...])
        // One block of `innerCount` elements per (outer position, index).
        var offsets: [Int] = []
        offsets.reserveCapacity(outerCount * positions.count)
        for outer in 0..<outerCount {
            for position in positions { offsets.append((outer * axisSize + position) * innerCount) }
        }
        return (BlockGather(offsets: offsets, blockSize: innerCount), shape)
    }
}

extension Gather: PackedWeightReadingOperator {
    // Rows of a matrix (axis 0 of a 2-D table; the table's rank is checked against the packed weight).
    var packedReadableInput: Int? { axis == 0 || axis == -2 ? 0 : nil }

    func reading(_ packed: PackedWeight) -> Gather? {
        // The rows of W are the columns of the packed op(W) only when the product read W transposed.
        guard packedReadableInput != nil, packed.transposed else { return nil }
        var op = self
        op.packedData = packed
        return op
    }
}

extension Gather: DifferentiableOperator {
    // dData = zeros(data.shape); for each output block b read from data block offset_b: dData[offset_b] += dY[b]
    // (scatter-add along axis); the indices have no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        // A packed table is frozen: its slot is gone, so no gradient is ever wanted for it.
        guard context.wants(0), packedData == nil else { return [nil, nil] }
        let data = try context.input(0)
        let (movement, _) = try gathering(from: data, at: context.input(1))
        return [try scatterAdded(context.outputGradient(), into: data.shape, movement), nil]
    }
}
