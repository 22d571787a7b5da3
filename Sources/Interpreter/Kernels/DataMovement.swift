import ONNXGraph

// Copies that never look at the values they move (Transpose, Slice, Expand, Concat, Split, Gather, ...). Each is
// written once, generic over the element type, as an `ElementMovement`; `moveElements` switches on the storage
// kind in one place, so float, integer and bool tensors share the same loops.

/// A copy that does not depend on the element type, so one generic implementation serves every storage.
protocol ElementMovement {
    /// Fills `output` (`count` uninitialised elements, `count > 0`) from the sources' values.
    func move<Element>(_ sources: [UnsafeBufferPointer<Element>], into output: UnsafeMutablePointer<Element>, count: Int)
}

/// Runs `movement` on the values of `sources` (which must share one storage kind), making a tensor of `shape`
/// and `dataType`.
func moveElements(
    from sources: [Tensor], shape: [Int], dataType: DataType, _ movement: some ElementMovement
) throws(KernelError) -> Tensor {
    guard let kind = sources.first?.storage.kind else { throw KernelError("no input to copy from") }
    if let other = sources.first(where: { $0.storage.kind != kind }) {
        throw KernelError("inputs must share one element type, got \(sources[0].dataType) and \(other.dataType)")
    }
    let count = shape.reduce(1, *)
    switch kind {
    case .float:
        return Tensor(shape: shape, dataType: dataType, storage: .float(movement.run(sources.map(\.floats), count: count)))
    case .int64:
        return Tensor(shape: shape, dataType: dataType, storage: .int64(movement.run(sources.map(\.int64s), count: count)))
    case .bytes:
        return Tensor(shape: shape, dataType: dataType, storage: .bytes(movement.run(sources.map(\.bytes), count: count)))
    case .bool:
        return Tensor(shape: shape, dataType: dataType, storage: .bool(movement.run(sources.map(\.bools), count: count)))
    }
}

extension ElementMovement {
    /// The `count` values `move` produces from `arrays`.
    func run<Element>(_ arrays: [[Element]], count: Int) -> [Element] {
        if count == 0 { return [] }
        return [Element](unsafeUninitializedCapacity: count) { output, initialized in
            withBuffers(arrays[...], []) { buffers in move(buffers, into: output.baseAddress!, count: count) }
            initialized = count
        }
    }
}

/// `tensor` broadcast (numpy rules) to `shape`, which it must broadcast to: leading new dimensions and dimensions
/// of size 1 re-read the same elements (stride 0). Returns `tensor` itself when the shape is already `shape`.
func expanded(_ tensor: Tensor, to shape: [Int]) throws(KernelError) -> Tensor {
    if tensor.shape == shape { return tensor }
    guard (try? broadcastShape([tensor.shape, shape])) == shape else {
        throw KernelError("shape \(tensor.shape) does not broadcast to \(shape)")
    }
    let inputStrides = contiguousStrides(tensor.shape)
    let leading = shape.count - tensor.rank
    let strides = (0..<shape.count).map { axis in
        axis < leading || tensor.shape[axis - leading] == 1 ? 0 : inputStrides[axis - leading]
    }
    return try moveElements(from: [tensor], shape: shape, dataType: tensor.dataType, StridedView(shape: shape, strides: strides))
}

/// `tensor` with its axes permuted: output axis `i` is input axis `perm[i]` (Transpose, and its own gradient with
/// the inverse permutation). Moving only dimensions of size 1 leaves the order of the values unchanged, so
/// needs no copy.
func transposed(_ tensor: Tensor, perm: [Int]) throws(KernelError) -> Tensor {
    guard perm.count == tensor.rank, perm.sorted() == Array(0..<tensor.rank) else {
        throw KernelError("\(perm) is not a permutation of the axes of shape \(tensor.shape)")
    }
    let shape = perm.map { tensor.shape[$0] }
    let moved = perm.filter { tensor.shape[$0] != 1 }
    if moved == moved.sorted() { return tensor.reshaped(shape) }
    let strides = contiguousStrides(tensor.shape)
    let view = StridedView(shape: shape, strides: perm.map { strides[$0] })
    return try moveElements(from: [tensor], shape: shape, dataType: tensor.dataType, view)
}

/// `tensors` joined along `axis` (resolved, the other dimensions already checked to match): Concat, and Split's
/// gradient. Operands with a zero-size axis contribute nothing, and joining one non-empty operand to empty ones
/// (the first step of a KV cache) copies nothing.
func concatenated(_ tensors: [Tensor], along axis: Int) throws(KernelError) -> Tensor {
    guard let first = tensors.first else { throw KernelError("nothing to concatenate") }
    var shape = first.shape
    shape[axis] = tensors.reduce(0) { $0 + $1.shape[axis] }
    let nonEmpty = tensors.filter { $0.count > 0 }
    if nonEmpty.count == 1, tensors.allSatisfy({ $0.storage.kind == first.storage.kind }) {
        return nonEmpty[0].reshaped(shape)
    }
    let outerCount = first.shape[..<axis].reduce(1, *)
    let innerCount = first.shape[(axis + 1)...].reduce(1, *)
    let movement = Concatenation(blockSizes: tensors.map { $0.shape[axis] * innerCount }, outerCount: outerCount)
    return try moveElements(from: tensors, shape: shape, dataType: first.dataType, movement)
}

/// Positions `rows` along `axis` of `tensor`, everything else whole: a part of Split, and an operand's share of
/// Concat's gradient. The whole axis is `tensor` itself.
func part(of tensor: Tensor, along axis: Int, _ rows: Swift.Range<Int>) throws(KernelError) -> Tensor {
    if rows == 0..<tensor.shape[axis] { return tensor }
    var shape = tensor.shape
    shape[axis] = rows.count
    let strides = contiguousStrides(tensor.shape)
    let view = StridedView(shape: shape, offset: rows.lowerBound * strides[axis], strides: strides)
    return try moveElements(from: [tensor], shape: shape, dataType: tensor.dataType, view)
}

/// Calls `body` with buffer pointers to every array of `arrays`, kept valid for the whole call.
private func withBuffers<Element, Result>(
    _ arrays: ArraySlice<[Element]>, _ buffers: [UnsafeBufferPointer<Element>],
    _ body: ([UnsafeBufferPointer<Element>]) -> Result
) -> Result {
    guard let first = arrays.first else { return body(buffers) }
    return first.withUnsafeBufferPointer { buffer in withBuffers(arrays.dropFirst(), buffers + [buffer], body) }
}

/// Which source element lands at each position of a row-major output: the element at output index `i` is
/// `source[offset + sum(i[d] * strides[d])]`. A stride is 0 along a broadcast dimension and negative along a
/// reversed slice; a transpose permutes the strides.
struct StridedView: ElementMovement {
    /// Output dimensions, outermost first.
    var shape: [Int]
    /// Position in the source of the output's first element.
    var offset: Int
    /// Source step, in elements, per output dimension.
    var strides: [Int]

    /// A view of `shape` starting at `offset` with the given source `strides`.
    init(shape: [Int], offset: Int = 0, strides: [Int]) {
        precondition(shape.count == strides.count, "view of shape \(shape) with strides \(strides)")
        self.shape = shape
        self.offset = offset
        self.strides = strides
    }

    /// The whole of a contiguous row-major tensor of `shape`.
    init(contiguous shape: [Int]) {
        self.init(shape: shape, strides: contiguousStrides(shape))
    }

    /// Whether the view reads all of a contiguous tensor of `shape`, in order, so that copying it changes nothing.
    /// The stride of a dimension of size 1 is never followed, so it may be anything.
    func isWhole(of shape: [Int]) -> Bool {
        guard self.shape == shape, offset == 0 else { return false }
        let contiguous = contiguousStrides(shape)
        return shape.indices.allSatisfy { shape[$0] == 1 || strides[$0] == contiguous[$0] }
    }

    /// Calls `body(row, position)` for each of `rows`, the runs along the innermost dimension numbered in
    /// row-major order, with `position` the offset (from `offset`) of the row's first element in the source.
    func forEachRow(in rows: Swift.Range<Int>, _ body: (_ row: Int, _ position: Int) -> Void) {
        let rank = shape.count
        let outerShape = Array(shape.dropLast())
        let outerStrides = Array(strides.dropLast())
        var index = [Int](repeating: 0, count: rank - 1)
        var position = outerPosition(of: rows.lowerBound, shape: outerShape, strides: outerStrides, index: &index)
        for row in rows {
            body(row, position)
            // Step the outer index, carrying into outer dimensions.
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                position += outerStrides[axis]
                if index[axis] < outerShape[axis] { break }
                position -= outerShape[axis] * outerStrides[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// The same walk with dimensions of size 1 dropped and neighbours the source steps over contiguously merged,
    /// so the innermost dimension is as long a run as possible. Always at least one dimension.
    func simplified() -> StridedView {
        var dims: [Int] = []
        var steps: [Int] = []
        for axis in 0..<shape.count where shape[axis] != 1 {
            if let last = steps.last, last == strides[axis] * shape[axis] {
                dims[dims.count - 1] *= shape[axis]
                steps[steps.count - 1] = strides[axis]
            } else {
                dims.append(shape[axis])
                steps.append(strides[axis])
            }
        }
        if dims.isEmpty { return StridedView(shape: [1], offset: offset, strides: [0]) }
        return StridedView(shape: dims, offset: offset, strides: steps)
    }

    /// Side of the square tiles in which a swap of the two innermost axes is copied, so that both the reads and
    /// the writes of a tile stay in cache.
    private static let tileSize = 32

    func move<Element>(_ sources: [UnsafeBufferPointer<Element>], into output: UnsafeMutablePointer<Element>, count: Int) {
        let view = simplified()
        let source = sources[0].baseAddress! + view.offset
        let rank = view.shape.count
        // A broadcast innermost dimension (stride 0) is better served by the fills below.
        if rank >= 2 && view.strides[rank - 1] != 1 && view.strides[rank - 1] != 0 && view.strides[rank - 2] == 1 {
            view.copyTransposedTiles(source, into: output, count: count)
            return
        }
        // Rows along the innermost dimension: contiguous (a block copy), repeated (a fill) or strided.
        let inner = view.shape[rank - 1]
        let innerStride = view.strides[rank - 1]
        Parallel.forEachChunk(count / inner, minimumPerThread: max(1, 32_768 / inner)) { rows in
            view.forEachRow(in: rows) { row, position in
                let destination = output + row * inner
                let start = source + position
                switch innerStride {
                case 1: destination.initialize(from: start, count: inner)
                case 0: destination.initialize(repeating: start.pointee, count: inner)
                default: for k in 0..<inner { (destination + k).initialize(to: start[k * innerStride]) }
                }
            }
        }
    }

    /// The copy when the two innermost output axes are swapped in the source (`K^T`, or any transpose moving the
    /// source's last axis): the output is a stack of `[rows, columns]` matrices read column-wise, copied in tiles.
    private func copyTransposedTiles<Element>(
        _ source: UnsafePointer<Element>, into output: UnsafeMutablePointer<Element>, count: Int
    ) {
        let rank = shape.count
        let rows = shape[rank - 2], columns = shape[rank - 1]
        let columnStride = strides[rank - 1]
        let outerShape = Array(shape.dropLast(2))
        let outerStrides = Array(strides.dropLast(2))
        let tile = Self.tileSize
        let rowTiles = (rows + tile - 1) / tile
        let matrices = count / (rows * columns)
        Parallel.forEachChunk(matrices * rowTiles, minimumPerThread: max(1, 32_768 / (tile * columns))) { units in
            var index = [Int](repeating: 0, count: outerShape.count)
            for unit in units {
                let matrix = unit / rowTiles, rowStart = (unit % rowTiles) * tile
                let rowEnd = min(rowStart + tile, rows)
                let base = source + outerPosition(of: matrix, shape: outerShape, strides: outerStrides, index: &index)
                let destination = output + matrix * rows * columns
                var columnStart = 0
                while columnStart < columns {
                    let columnEnd = min(columnStart + tile, columns)
                    for column in columnStart..<columnEnd {
                        let read = base + column * columnStride
                        for row in rowStart..<rowEnd {
                            (destination + row * columns + column).initialize(to: read[row])
                        }
                    }
                    columnStart = columnEnd
                }
            }
        }
    }
}

/// The source position of the `linear`-th element of a row-major walk over `shape` with source `strides`,
/// leaving its multi-index in `index`.
private func outerPosition(of linear: Int, shape: [Int], strides: [Int], index: inout [Int]) -> Int {
    var remainder = linear
    var position = 0
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        index[axis] = remainder % shape[axis]
        remainder /= shape[axis]
        position += index[axis] * strides[axis]
    }
    return position
}

/// Output block `b` (of `blockSize` elements) is the source block starting at `offsets[b]`: Gather and GatherND.
struct BlockGather: ElementMovement {
    /// Start of each output block in the source, in elements.
    var offsets: [Int]
    /// Elements per block.
    var blockSize: Int

    func move<Element>(_ sources: [UnsafeBufferPointer<Element>], into output: UnsafeMutablePointer<Element>, count: Int) {
        let source = sources[0].baseAddress!
        let blockSize = blockSize
        offsets.withUnsafeBufferPointer { offsets in
            Parallel.forEachChunk(offsets.count, minimumPerThread: max(1, 32_768 / blockSize)) { blocks in
                for block in blocks {
                    (output + block * blockSize).initialize(from: source + offsets[block], count: blockSize)
                }
            }
        }
    }
}

/// The output is `outerCount` rows, each the concatenation of the matching row (`blockSizes[i]` elements) of
/// every source: Concat along an axis, where a row spans the axis and everything inside it.
struct Concatenation: ElementMovement {
    /// Elements each source contributes per row.
    var blockSizes: [Int]
    /// Number of rows (the product of the dimensions before the axis).
    var outerCount: Int

    func move<Element>(_ sources: [UnsafeBufferPointer<Element>], into output: UnsafeMutablePointer<Element>, count: Int) {
        let blockSizes = blockSizes
        let rowSize = count / outerCount
        Parallel.forEachChunk(outerCount, minimumPerThread: max(1, 32_768 / rowSize)) { rows in
            for row in rows {
                var destination = output + row * rowSize
                for (source, blockSize) in zip(sources, blockSizes) where blockSize > 0 {
                    destination.initialize(from: source.baseAddress! + row * blockSize, count: blockSize)
                    destination += blockSize
                }
            }
        }
    }
}
