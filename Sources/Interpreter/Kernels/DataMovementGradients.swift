import ONNXGraph

// The adjoints of the copies in DataMovement.swift, for the gradient rules of the ops that use them. A copy reads
// each output element from one source position, so its adjoint writes each gradient element back to that position:
// as a plain write where the copy reads every position at most once (a slice), and as a sum where it may read one
// several times (a gather with repeated indices). Gradients are floating-point, so these are written for `Float`.

/// A tensor of `shape` that is zero except at the positions `view` reads, which hold `values` (shaped like the
/// view): the adjoint of copying `view` out of a tensor of `shape`, as Slice does. The view must read no position
/// twice (no stride 0 along a dimension longer than 1), which holds for slices, parts and permutations.
func scattered(_ values: Tensor, into shape: [Int], _ view: StridedView) throws(KernelError) -> Tensor {
    guard case .float(let source) = values.storage, values.shape == view.shape else {
        throw KernelError("cannot scatter a \(values.dataType) tensor of shape \(values.shape) through a view of shape "
            + "\(view.shape)")
    }
    if view.isWhole(of: shape) { return values.reshaped(shape) }
    var result = [Float](repeating: 0, count: shape.reduce(1, *))
    if source.isEmpty { return Tensor(shape: shape, floats: result, dataType: values.dataType) }
    let walk = view.simplified()
    precondition(zip(walk.shape, walk.strides).allSatisfy { $0.0 == 1 || $0.1 != 0 },
                 "a view that reads a position twice (strides \(view.strides)) has a summing adjoint")
    let inner = walk.shape[walk.shape.count - 1]
    let innerStride = walk.strides[walk.strides.count - 1]
    let rowCount = source.count / inner
    source.withUnsafeBufferPointer { source in
        result.withUnsafeMutableBufferPointer { result in
            let target = result.baseAddress! + walk.offset
            let source = source.baseAddress!
            // Each row of the view lands on its own positions, so rows can be written concurrently.
            Parallel.forEachChunk(rowCount, minimumPerThread: max(1, 32_768 / inner)) { rows in
                walk.forEachRow(in: rows) { row, position in
                    let values = source + row * inner
                    let destination = target + position
                    if innerStride == 1 {
                        destination.update(from: values, count: inner)
                    } else {
                        for k in 0..<inner { destination[k * innerStride] = values[k] }
                    }
                }
            }
        }
    }
    return Tensor(shape: shape, floats: result, dataType: values.dataType)
}

/// A tensor of `shape` that is zero except that block `b` of `values` (`blocks.blockSize` elements) is added at
/// `blocks.offsets[b]`: the adjoint of `BlockGather` (Gather, GatherND). A block gathered several times (a
/// repeated index) receives the sum of its gradients.
func scatterAdded(_ values: Tensor, into shape: [Int], _ blocks: BlockGather) throws(KernelError) -> Tensor {
    let blockSize = blocks.blockSize
    guard case .float(let source) = values.storage, values.count == blocks.offsets.count * blockSize else {
        throw KernelError("cannot scatter a \(values.dataType) tensor of shape \(values.shape) as "
            + "\(blocks.offsets.count) blocks of \(blockSize)")
    }
    var result = [Float](repeating: 0, count: shape.reduce(1, *))
    if source.isEmpty { return Tensor(shape: shape, floats: result, dataType: values.dataType) }
    source.withUnsafeBufferPointer { source in
        result.withUnsafeMutableBufferPointer { result in
            blocks.offsets.withUnsafeBufferPointer { offsets in
                let source = source.baseAddress!, target = result.baseAddress!
                // Two blocks may land on the same positions, so threads split the columns of the blocks rather
                // than the blocks: each thread adds every block's share of its columns, and no two threads write
                // one position.
                Parallel.forEachChunk(blockSize, minimumPerThread: max(1, 32_768 / offsets.count)) { columns in
                    for (block, offset) in offsets.enumerated() {
                        let values = source + block * blockSize
                        let destination = target + offset
                        for k in columns { destination[k] += values[k] }
                    }
                }
            }
        }
    }
    return Tensor(shape: shape, floats: result, dataType: values.dataType)
}
