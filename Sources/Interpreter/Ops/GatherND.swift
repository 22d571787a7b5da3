import ONNXGraph

/// Picks slices of `data` addressed by the last dimension of `indices`, the first `batch_dims` dimensions of
/// both being matched batch dimensions:
/// `output[b..., i...] = data[b..., indices[b..., i..., 0], ..., indices[b..., i..., k - 1], ...]`, of shape
/// `indices.shape[..<(q - 1)] + data.shape[(batch_dims + k)...]` (q the rank of `indices`, k its last dimension).
///
/// Backward: `dData` is zeros with each slice of `dY` added back where it was read, so a repeated index sums.
struct GatherND: Operator {
    static let opType = "GatherND"
    static let sinceVersions = [13]

    /// Number of leading batch dimensions shared by `data` and `indices`.
    let batchDims: Int

    init(node: Node, version: Int) throws {
        batchDims = try node.int("batch_dims", default: 0)
        guard batchDims >= 0 else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "batch_dims",
                                              reason: "must be >= 0, got \(batchDims)")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        let (movement, shape) = try gathering(from: data, at: inputs.required(1))
        return [try moveElements(from: [data], shape: shape, dataType: data.dataType, movement)]
    }

    /// The slices of `data` the gather reads, in output order, and the output's shape.
    private func gathering(from data: Tensor, at indices: Tensor) throws(KernelError) -> (BlockGather, shape: [Int]) {
        let indexValues = try indices.intValues("GatherND indices")
        let batchDims = batchDims
        guard data.rank > batchDims, indices.rank > batchDims,
              let tupleLength = indices.shape.last, tupleLength >= 1, tupleLength <= data.rank - batchDims,
              data.shape[..<batchDims] == indices.shape[..<batchDims] else {
            throw KernelError("GatherND with batch_dims \(batchDims) cannot index data of shape \(data.shape) with "
                + "indices of shape \(indices.shape): the ranks must exceed batch_dims, the batch dimensions match, "
                + "and the last index dimension lie in 1...\(data.rank - batchDims)")
        }
        let dataStrides = contiguousStrides(data.shape)
        let batchCount = data.shape[..<batchDims].reduce(1, *)
        let batchStride = data.shape[batchDims...].reduce(1, *)
        let tuplesPerBatch = indices.shape[batchDims..<(indices.rank - 1)].reduce(1, *)
        let blockSize = data.shape[(batchDims + tupleLength)...].reduce(1, *)
        var offsets: [Int] = []
        offsets.reserveCapacity(batchCount * tuplesPerBatch)
        for batch in 0..<batchCount {
            for tuple in 0..<tuplesPerBatch {
                let first = (batch * tuplesPerBatch + tuple) * tupleLength
                var offset = batch * batchStride
                for component in 0..<tupleLength {
                    let axis = batchDims + component
                    let index = indexValues[first + component]
                    let position = index < 0 ? index + data.shape[axis] : index
                    guard position >= 0, position < data.shape[axis] else {
                        throw KernelError("GatherND index \(index) is out of range for axis \(axis) of data shape "
                            + "\(data.shape)")
                    }
                    offset += position * dataStrides[axis]
                }
                offsets.append(offset)
            }
        }
        let shape = Array(indices.shape.dropLast()) + Array(data.shape[(batchDims + tupleLength)...])
        return (BlockGather(offsets: offsets, blockSize: blockSize), shape)
    }
}

extension GatherND: DifferentiableOperator {
    // dData = zeros(data.shape); dData[b..., indices[b..., i..., :], ...] += dY[b..., i..., ...] (scatter-add, per
    // batch); the indices have no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil, nil] }
        let data = try context.input(0)
        let (movement, _) = try gathering(from: data, at: context.input(1))
        return [try scatterAdded(context.outputGradient(), into: data.shape, movement), nil]
    }
}
