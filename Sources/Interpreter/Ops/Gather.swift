import ONNXGraph

/// Picks entries of `data` along `axis` at `indices` (negative ones count from the end): the output shape is
/// `data.shape[..<axis] + indices.shape + data.shape[(axis + 1)...]`. An embedding lookup is Gather on axis 0.
struct Gather: Operator {
    static let opType = "Gather"
    static let sinceVersions = [13]

    /// The axis of `data` indexed, possibly negative.
    let axis: Int

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: 0)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        let indices = try inputs.required(1)
        let axis = try resolveAxis(self.axis, in: data.shape)
        let axisSize = data.shape[axis]
        let positions = try indices.intValues("Gather indices").map { index throws(KernelError) -> Int in
            let position = index < 0 ? index + axisSize : index
            guard position >= 0, position < axisSize else {
                throw KernelError("Gather index \(index) is out of range for axis \(self.axis) of data shape \(data.shape)")
            }
            return position
        }
        let outerCount = data.shape[..<axis].reduce(1, *)
        let innerCount = data.shape[(axis + 1)...].reduce(1, *)
        let shape = Array(data.shape[..<axis]) + indices.shape + Array(data.shape[(axis + 1)...])
        // One block of `innerCount` elements per (outer position, index).
        var offsets: [Int] = []
        offsets.reserveCapacity(outerCount * positions.count)
        for outer in 0..<outerCount {
            for position in positions { offsets.append((outer * axisSize + position) * innerCount) }
        }
        let movement = BlockGather(offsets: offsets, blockSize: innerCount)
        return [try moveElements(from: [data], shape: shape, dataType: data.dataType, movement)]
    }
}
