import ONNXGraph

/// `data[starts[i]:ends[i]:steps[i]]` along `axes[i]` (all axes `0..<starts.count` and steps 1 when omitted).
/// Negative starts and ends count from the end; then, for a dimension of size `n`, starts are clamped to `0...n`
/// and ends to `0...n` for positive steps, and to `0...n-1` and `-1...n-1` for negative steps, so INT64_MAX and
/// INT64_MIN mean "to the end" either way.
///
/// Backward: `dData` is zero except on the sliced view, which holds `dY`.
struct Slice: Operator {
    static let opType = "Slice"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        let view = try view(of: data, inputs)
        if view.isWhole(of: data.shape) { return [data] }
        return [try moveElements(from: [data], shape: view.shape, dataType: data.dataType, view)]
    }

    /// The elements of `data` the slice reads, as a view into it: the output's shape, the position of its first
    /// element, and the step in `data` along each output dimension.
    private func view(of data: Tensor, _ inputs: [Tensor?]) throws(KernelError) -> StridedView {
        let starts = try inputs.required(1).intValues("Slice starts")
        let ends = try inputs.required(2).intValues("Slice ends")
        let axes = try inputs.optional(3)?.intValues("Slice axes") ?? Array(0..<starts.count)
        let steps = try inputs.optional(4)?.intValues("Slice steps") ?? [Int](repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw KernelError("Slice needs as many ends, axes and steps as starts, got starts \(starts), ends \(ends), "
                + "axes \(axes), steps \(steps)")
        }
        let sourceStrides = contiguousStrides(data.shape)
        var view = StridedView(contiguous: data.shape)
        var sliced = Set<Int>()
        for (index, requestedAxis) in axes.enumerated() {
            let axis = try resolveAxis(requestedAxis, in: data.shape, "Slice axis")
            guard sliced.insert(axis).inserted else { throw KernelError("Slice axes \(axes) repeat axis \(axis)") }
            let step = steps[index]
            guard step != 0 else { throw KernelError("Slice steps \(steps) contain 0") }
            let size = data.shape[axis]
            var start = starts[index], end = ends[index]
            if start < 0 { start += size }
            if end < 0 { end += size }
            let length: Int
            if step > 0 {
                start = min(max(start, 0), size)
                end = min(max(end, 0), size)
                length = end > start ? (end - start - 1) / step + 1 : 0
            } else {
                start = min(max(start, 0), size - 1)
                end = min(max(end, -1), size - 1)
                length = start > end ? Int(UInt(start - end - 1) / step.magnitude) + 1 : 0
            }
            view.shape[axis] = length
            if length > 0 { view.offset += start * sourceStrides[axis] }
            // A stride is never followed for a single element, and must not overflow for a huge step.
            view.strides[axis] = length > 1 ? step * sourceStrides[axis] : 0
        }
        return view
    }
}

extension Slice: DifferentiableOperator {
    // dData = zeros(data.shape) with dData[starts:ends:steps] = dY (the forward's view, written instead of read);
    // starts, ends, axes and steps have no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return context.inputs.map { _ in nil } }
        let data = try context.input(0)
        let dData = try scattered(context.outputGradient(), into: data.shape, view(of: data, context.inputs))
        return [dData] + context.inputs.dropFirst().map { _ in nil }
    }
}
