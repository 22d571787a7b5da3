import ONNXGraph

/// `data[starts[i]:ends[i]:steps[i]]` along `axes[i]` (all axes `0..<starts.count` and steps 1 when omitted).
/// Negative starts and ends count from the end; then, for a dimension of size `n`, starts are clamped to `0...n`
/// and ends to `0...n` for positive steps, and to `0...n-1` and `-1...n-1` for negative steps, so INT64_MAX and
/// INT64_MIN mean "to the end" either way.
struct Slice: Operator {
    static let opType = "Slice"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
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
        if view.shape == data.shape && view.offset == 0 && steps.allSatisfy({ $0 == 1 }) { return [data] }
        return [try moveElements(from: [data], shape: view.shape, dataType: data.dataType, view)]
    }
}
