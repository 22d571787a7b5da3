import ONNXGraph

/// The mean over `axes` (ONNX `ReduceMean`). Opset 13 takes `axes` as an attribute, 18 as an optional second
/// input with `noop_with_empty_axes`: when the axes are absent or empty every axis is reduced, unless
/// `noop_with_empty_axes` is 1, in which case the input is returned unchanged. `keepdims` (default 1) keeps the
/// reduced axes as size 1.
///
/// Integer means truncate toward zero. A mean over zero elements is 0, as in onnxruntime. Reducing trailing axes
/// (RMSNorm's `mean(x², -1)`) sums contiguous rows in parallel; other axis sets take one strided pass.
///
/// Backward: `dData = dReduced / count`, broadcast back over the reduced axes.
struct ReduceMean: Operator {
    static let opType = "ReduceMean"
    static let sinceVersions = [13, 18]

    /// The `axes` attribute (opset 13); from 18 they come from input 1.
    let axesAttribute: [Int]?
    let axesFromInput: Bool
    /// The ONNX attributes `keepdims` and `noop_with_empty_axes` (the latter 0 before 18).
    let keepdims: Bool
    let noopWithEmptyAxes: Bool
    /// Whether the sums are divided by the number of elements reduced: false makes this `ReduceSum`, which shares
    /// everything else (its opset 13 reads axes as ReduceMean 18 does).
    var averaging = true
    var opType: String { averaging ? Self.opType : ReduceSum.opType }

    init(node: Node, version: Int) throws {
        keepdims = try node.int("keepdims", default: 1) != 0
        axesFromInput = version >= 18
        axesAttribute = axesFromInput ? nil : try node.ints("axes")
        noopWithEmptyAxes = axesFromInput ? try node.int("noop_with_empty_axes", default: 0) != 0 : false
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        guard let reduced = try reducedAxes(data, inputs) else { return [data] }
        let keptShape = data.shape.indices.map { reduced[$0] ? 1 : data.shape[$0] }
        let outputShape = keepdims ? keptShape : data.shape.indices.filter { !reduced[$0] }.map { data.shape[$0] }
        let reducedCount = data.shape.indices.filter { reduced[$0] }.map { data.shape[$0] }.reduce(1, *)

        switch data.widenedStorage {
        case .float(let x):
            var sums = Self.sums(x, data.shape, keptShape, zero: 0, add: { $0 + $1 }, rowSum: vectorSum)
            if averaging && reducedCount > 0 {
                let scale = 1 / Float(reducedCount)
                sums = sums.map { $0 * scale }
            }
            sums = roundedToPrecision(sums, data.dataType)
            return [Tensor(shape: outputShape, floats: sums, dataType: data.dataType)]
        case .int64(let x):
            var sums = Self.sums(x, data.shape, keptShape, zero: 0, add: { $0 &+ $1 }) { values, count in
                var total: Int64 = 0
                for k in 0..<count { total &+= values[k] }
                return total
            }
            if averaging && reducedCount > 0 {
                let divisor = Int64(reducedCount)
                sums = sums.map { $0 / divisor }
            }
            return [Tensor(shape: outputShape, int64s: sums, dataType: data.dataType)]
        case .bool, .bytes:  // widened storage is never bytes
            throw KernelError("\(opType) is not defined for bool inputs")
        }
    }

    /// Per axis of `data`, whether it is reduced; nil when the op returns `data` unchanged (no axes and
    /// `noop_with_empty_axes`).
    private func reducedAxes(_ data: Tensor, _ inputs: [Tensor?]) throws(KernelError) -> [Bool]? {
        let requested = (axesFromInput ? try inputs.optional(1)?.intValues("\(opType) axes") : axesAttribute) ?? []
        if requested.isEmpty && noopWithEmptyAxes { return nil }
        var reduced = [Bool](repeating: requested.isEmpty, count: data.rank)
        for axis in requested {
            let axis = try resolveAxis(axis, in: data.shape)
            guard axis < data.rank, !reduced[axis] else {
                throw KernelError(
                    "\(opType): axes \(requested) repeat an axis or are out of range for rank \(data.rank)")
            }
            reduced[axis] = true
        }
        return reduced
    }

    /// Sums of `x` (of `shape`) over the axes where `keptShape` is 1 and `shape` is not, laid out as `keptShape`.
    @inline(__always)
    private static func sums<T>(
        _ x: [T], _ shape: [Int], _ keptShape: [Int], zero: T, add: (T, T) -> T,
        rowSum: (UnsafePointer<T>, Int) -> T
    ) -> [T] {
        let outputCount = keptShape.reduce(1, *)
        guard outputCount > 0 else { return [] }
        guard !x.isEmpty else { return [T](repeating: zero, count: outputCount) }
        // Trailing reduced axes (ignoring kept axes of size 1): each output sums one contiguous row.
        let firstReduced = shape.indices.first { keptShape[$0] != shape[$0] } ?? shape.count
        let reducesSuffix = shape.indices.allSatisfy { $0 < firstReduced || keptShape[$0] == 1 }
        return [T](unsafeUninitializedCapacity: outputCount) { out, initialized in
            x.withUnsafeBufferPointer { x in
                let xBase = x.baseAddress!, outBase = out.baseAddress!
                if reducesSuffix {
                    let rowLength = x.count / outputCount
                    forEachRowChunk(rows: outputCount, rowLength: rowLength) { range in
                        for row in range { (outBase + row).initialize(to: rowSum(xBase + row * rowLength, rowLength)) }
                    }
                } else {
                    outBase.initialize(repeating: zero, count: outputCount)
                    let plan = BroadcastPlan(output: shape, operands: [shape, keptShape])
                    plan.forEachRun(in: 0..<plan.count) { _, run, offsets, strides in
                        let input = xBase + offsets[0], output = outBase + offsets[1]
                        let (inputStride, outputStride) = (strides[0], strides[1])
                        for k in 0..<run {
                            output[k * outputStride] = add(output[k * outputStride], input[k * inputStride])
                        }
                    }
                }
            }
            initialized = outputCount
        }
    }
}

extension ReduceMean: DifferentiableOperator {
    // dData = broadcast(dReduced) / count, the reduced axes restored as size 1 and expanded; none for axes
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let data = try context.input(0), dReduced = context.outputGradient()
        let axesGradient: [Tensor?] = context.inputs.dropFirst().map { _ in nil }
        guard context.wants(0), data.storage.kind == .float else { return [nil] + axesGradient }
        guard let reduced = try reducedAxes(data, context.inputs) else { return [dReduced] + axesGradient }
        guard case .float(let gradient) = dReduced.storage else {
            throw KernelError("\(opType) gradient needs a floating-point output gradient, got \(dReduced.dataType)")
        }
        let keptShape = data.shape.indices.map { reduced[$0] ? 1 : data.shape[$0] }
        let reducedCount = data.shape.indices.filter { reduced[$0] }.map { data.shape[$0] }.reduce(1, *)
        let scale: [Float] = [!averaging ? 1 : reducedCount > 0 ? 1 / Float(reducedCount) : 0]
        let values = broadcastKernel(gradient, keptShape, scale, [], outputShape: data.shape, Product.self)
        return [Tensor(shape: data.shape, floats: values, dataType: data.dataType)] + axesGradient
    }
}
