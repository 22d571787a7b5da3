import ONNXGraph

// Which output features of a projection reach an attention operand.
//
// A fused projection (GPT-2's c_attn, Phi-3's qkv_proj, GPT-NeoX's query_key_value) computes q, k and v in one
// MatMul; Reshape, Transpose, Split and Slice then pull each of them out, and rotary embedding slices and
// re-concatenates inside q and k. Rather than recognise those patterns, the output features ("columns") of
// the projection are followed forward through the ops between it and the operand: every value on the way
// carries, for each position of its feature axes, the set of projection columns it was computed from. The
// columns of the operand are the union of those sets. Axes are counted from the end (-1 is the last axis),
// which stays right under broadcasting and needs no batch or sequence size.

/// The feature axes of one value, with the projection columns behind every position of them.
struct FeatureLayout: Equatable {
    /// Rank of the value, when some op told it (Reshape, Transpose); nil otherwise.
    var rank: Int?
    /// Feature axes as negative offsets from the last axis, ascending (for `[B, H, T, D]`: `[-3, -1]`).
    var axes: [Int]
    /// Size of each feature axis.
    var sizes: [Int]
    /// Projection columns behind each position, row-major over `axes`; each array sorted.
    var entries: [[Int]]

    /// A projection's output: one feature axis, the last, position `c` computed from column `c`.
    init(columns: Int, rank: Int?) {
        self.rank = rank
        axes = [-1]
        sizes = [columns]
        entries = (0..<columns).map { [$0] }
    }

    init(rank: Int?, axes: [Int], sizes: [Int], entries: [[Int]]) {
        self.rank = rank
        self.axes = axes
        self.sizes = sizes
        self.entries = entries
    }

    var columns: Set<Int> { Set(entries.joined()) }

    /// Positions `indices` of feature axis `axis` (an index into `axes`).
    func selecting(_ indices: [Int], along axis: Int) -> FeatureLayout {
        let outer = sizes[..<axis].reduce(1, *), inner = sizes[(axis + 1)...].reduce(1, *)
        var result: [[Int]] = []
        result.reserveCapacity(outer * indices.count * inner)
        for o in 0..<outer {
            for index in indices {
                let base = (o * sizes[axis] + index) * inner
                result.append(contentsOf: entries[base..<(base + inner)])
            }
        }
        var sizes = self.sizes
        sizes[axis] = indices.count
        return FeatureLayout(rank: rank, axes: axes, sizes: sizes, entries: result)
    }

    /// The feature sub-array with its axes reordered: new axis `i` is old axis `order[i]`.
    func permuted(_ order: [Int]) -> (sizes: [Int], entries: [[Int]]) {
        let newSizes = order.map { sizes[$0] }
        guard order != Array(order.indices) else { return (sizes, entries) }
        var oldStrides = [Int](repeating: 1, count: sizes.count)
        for axis in stride(from: sizes.count - 2, through: 0, by: -1) { oldStrides[axis] = oldStrides[axis + 1] * sizes[axis + 1] }
        var result: [[Int]] = []
        result.reserveCapacity(entries.count)
        var counter = [Int](repeating: 0, count: order.count)
        for _ in 0..<entries.count {
            var source = 0
            for (axis, position) in counter.enumerated() { source += position * oldStrides[order[axis]] }
            result.append(entries[source])
            var axis = counter.count - 1
            while axis >= 0 {
                counter[axis] += 1
                if counter[axis] < newSizes[axis] { break }
                counter[axis] = 0
                axis -= 1
            }
        }
        return (newSizes, result)
    }

    /// `self` and `other` joined along feature axis `axis`; both must have the same other axes.
    func concatenating(_ other: FeatureLayout, along axis: Int) -> FeatureLayout? {
        guard other.axes == axes else { return nil }
        for index in sizes.indices where index != axis && sizes[index] != other.sizes[index] { return nil }
        let outer = sizes[..<axis].reduce(1, *), inner = sizes[(axis + 1)...].reduce(1, *)
        var result: [[Int]] = []
        for o in 0..<outer {
            let mine = o * sizes[axis] * inner, theirs = o * other.sizes[axis] * inner
            result.append(contentsOf: entries[mine..<(mine + sizes[axis] * inner)])
            result.append(contentsOf: other.entries[theirs..<(theirs + other.sizes[axis] * inner)])
        }
        var sizes = self.sizes
        sizes[axis] += other.sizes[axis]
        return FeatureLayout(rank: rank, axes: axes, sizes: sizes, entries: result)
    }

    /// Position-wise union with a value of the same feature layout (an elementwise op of two branches).
    func merging(_ other: FeatureLayout) -> FeatureLayout? {
        guard other.axes == axes, other.sizes == sizes else { return nil }
        var result = self
        for index in entries.indices where entries[index] != other.entries[index] {
            result.entries[index] = Array(Set(entries[index]).union(other.entries[index])).sorted()
        }
        if rank != other.rank { result.rank = nil }
        return result
    }

    /// `axis` of an op (non-negative or negative) as an offset from the last axis, nil when it cannot be
    /// placed (a non-negative axis of a value of unknown rank).
    func offset(ofAxis axis: Int) -> Int? {
        if axis < 0 { return axis }
        guard let rank, axis < rank else { return nil }
        return axis - rank
    }
}

/// What is known of the projection columns behind a value.
enum ColumnProvenance: Equatable {
    /// Position by position.
    case exact(FeatureLayout)
    /// Only an upper bound on the set: an op was met whose effect on the feature positions could not be worked
    /// out (a Slice with bounds computed from a shape that is not known, a Reshape mixing feature and batch
    /// axes). Enough after the q/k/v split, not before it: `LoRATargets` checks that fused parts are disjoint.
    case bounded(Set<Int>)

    var columns: Set<Int> {
        switch self {
        case .exact(let layout): layout.columns
        case .bounded(let columns): columns
        }
    }

    var isExact: Bool {
        if case .exact = self { return true }
        return false
    }
}

/// The inputs of `node` through which a projection's output can flow into an attention operand; nil when the
/// op is not one the search walks through (the walk stops there). Shape-only inputs (Reshape's shape, Slice's
/// bounds) are not listed: they decide where values go, not what they hold.
func dataInputs(of node: Node) -> [Int]? {
    // RotaryEmbedding (ONNX 23, or com.microsoft) rotates its input 0 within each head, as exports of the
    // attention ops write it between the q / k projections and the op.
    if node.opType == "RotaryEmbedding", node.domain.isEmpty || node.domain == "com.microsoft" { return [0] }
    guard node.domain.isEmpty else { return nil }
    switch node.opType {
    case "Reshape", "Transpose", "Cast", "Identity", "Neg", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Split",
         "Slice", "Dropout", "Sqrt", "Reciprocal", "Pow", "LayerNormalization", "Tile":
        return [0]
    case "Add", "Sub", "Mul", "Div":
        return [0, 1]
    case "Where":
        return [1, 2]
    case "Concat":
        return Array(node.inputs.indices)
    default:
        return nil
    }
}

/// Follows the columns of one projection forward through the nodes between it and an attention operand.
struct ColumnTracer {
    let index: GraphIndex
    private(set) var states: [String: ColumnProvenance] = [:]

    init(index: GraphIndex, projection: GraphIndex.Linear) {
        self.index = index
        // Gemm's output is 2-D; MatMul's has the rank of its activation.
        let rank = index.ranks[projection.node.outputs[0]]
        states[projection.node.outputs[0]] = .exact(FeatureLayout(columns: projection.outFeatures, rank: rank))
    }

    func provenance(of value: String) -> ColumnProvenance? { states[value] }

    /// Runs `nodes` (indices, in graph order), each of which reads at least one traced value.
    mutating func run(_ nodes: [Int]) {
        for nodeIndex in nodes {
            let node = index.node(nodeIndex)
            for (output, state) in propagate(node) where !output.isEmpty {
                // The inferred rank, where there is one, is more reliable than the one carried along.
                if case .exact(var layout) = state, let rank = index.ranks[output] {
                    layout.rank = rank
                    states[output] = .exact(layout)
                } else {
                    states[output] = state
                }
            }
        }
    }

    // MARK: - One node

    private func propagate(_ node: Node) -> [(String, ColumnProvenance)] {
        let traced = (dataInputs(of: node) ?? []).compactMap { position -> ColumnProvenance? in
            position < node.inputs.count ? states[node.inputs[position]] : nil
        }
        guard !traced.isEmpty else { return [] }
        let union = ColumnProvenance.bounded(traced.reduce(into: Set<Int>()) { $0.formUnion($1.columns) })
        let first = node.inputs.first.flatMap { states[$0] }

        func single(_ transform: (FeatureLayout) -> ColumnProvenance?) -> [(String, ColumnProvenance)] {
            guard let first else { return node.outputs.map { ($0, union) } }
            guard case .exact(let layout) = first else { return node.outputs.map { ($0, first) } }
            return [(node.outputs[0], transform(layout) ?? union)]
        }

        switch node.opType {
        case "Reshape":
            return single { reshape($0, to: ints(node.inputs[1])) }
        case "Transpose":
            return single { layout in
                guard let perm = try? node.ints("perm") else { return nil }
                return transpose(layout, perm: perm)
            }
        case "Flatten":
            return single { flatten($0, axis: (try? node.int("axis", default: 1)) ?? 1) }
        case "Unsqueeze":
            return single { layout in
                guard let axes = axesInput(node) else { return nil }
                return unsqueeze(layout, axes: axes)
            }
        case "Squeeze":
            return single { layout in
                guard let axes = axesInput(node) else { return nil }
                return squeeze(layout, axes: axes)
            }
        case "Expand":
            return single { layout in
                var result = layout
                if let shape = index.partialInts(node.inputs[1], dimensions: dimensions), let rank = layout.rank {
                    result.rank = max(rank, shape.count)
                } else {
                    result.rank = nil
                }
                // A feature axis of size 1 broadcast to more positions would repeat its columns; not seen in
                // exports (the repeated axes of grouped-query attention are new, non-feature axes).
                return layout.sizes.contains(1) ? nil : .exact(result)
            }
        case "Slice":
            return single { slice($0, node) }
        case "Split":
            guard let first else { return [] }
            return split(first, node)
        case "Concat":
            return [(node.outputs[0], concat(node) ?? union)]
        case "Tile":
            return [(node.outputs[0], union)]
        case "RotaryEmbedding":
            // Pairs positions within each head (i with i + R/2, or 2i with 2i + 1): the columns, not their positions.
            return [(node.outputs[0], union)]
        default:
            // Elementwise: unary ops keep positions; binary ops merge the traced branches position-wise.
            let exact = traced.compactMap { if case .exact(let layout) = $0 { layout } else { nil } }
            guard exact.count == traced.count, var merged = exact.first else { return [(node.outputs[0], union)] }
            for other in exact.dropFirst() {
                guard let next = merged.merging(other) else { return [(node.outputs[0], union)] }
                merged = next
            }
            return [(node.outputs[0], .exact(merged))]
        }
    }

    /// What is known of a value's shape: the declared fixed dimensions and the traced feature axes.
    private func dimensions(_ value: String) -> [Int?]? {
        var dims = index.knownDimensions(value)
        if case .exact(let layout)? = states[value], let rank = layout.rank {
            if dims?.count != rank { dims = [Int?](repeating: nil, count: rank) }
            for (axis, size) in zip(layout.axes, layout.sizes) { dims?[rank + axis] = size }
        }
        return dims
    }

    private func ints(_ value: String) -> [Int?]? {
        index.partialInts(value, dimensions: dimensions)
    }

    /// `axes` of Squeeze/Unsqueeze: the second input from opset 13, the attribute before.
    private func axesInput(_ node: Node) -> [Int]? {
        if node.inputs.count > 1, !node.inputs[1].isEmpty {
            guard let values = ints(node.inputs[1]), values.allSatisfy({ $0 != nil }) else { return nil }
            return values.map { $0! }
        }
        return try? node.ints("axes")
    }

    // MARK: - Shape ops

    private func reshape(_ layout: FeatureLayout, to target: [Int?]?) -> ColumnProvenance? {
        // Only the trailing feature axes may be regrouped; the leading axes (batch, sequence) pass through.
        guard let target, layout.axes == Array((-layout.axes.count)...(-1)) else { return nil }
        let features = layout.sizes.reduce(1, *)
        var product = 1
        var sizes: [Int] = []
        for dimension in target.reversed() {
            guard product < features, let dimension else { break }
            if dimension == -1 {
                guard features % product == 0 else { return nil }
                sizes.insert(features / product, at: 0)
                product = features
            } else if dimension > 0 {
                sizes.insert(dimension, at: 0)
                product *= dimension
            } else {
                return nil  // 0 copies (or, with allowzero, is) a dimension: not a feature regrouping.
            }
        }
        guard product == features else { return nil }
        return .exact(FeatureLayout(rank: target.count, axes: Array((-sizes.count)...(-1)), sizes: sizes,
                                    entries: layout.entries))
    }

    private func transpose(_ layout: FeatureLayout, perm: [Int]) -> ColumnProvenance? {
        let rank = perm.count
        guard layout.rank == nil || layout.rank == rank else { return nil }
        // (new position, feature index) for each feature axis.
        var placed: [(position: Int, feature: Int)] = []
        for (feature, offset) in layout.axes.enumerated() {
            guard let position = perm.firstIndex(of: rank + offset) else { return nil }
            placed.append((position, feature))
        }
        placed.sort { $0.position < $1.position }
        let (sizes, entries) = layout.permuted(placed.map(\.feature))
        return .exact(FeatureLayout(rank: rank, axes: placed.map { $0.position - rank }, sizes: sizes, entries: entries))
    }

    private func flatten(_ layout: FeatureLayout, axis: Int) -> ColumnProvenance? {
        // Exact only when the flattened tail is exactly the feature axes.
        guard let rank = layout.rank, layout.axes == Array((-layout.axes.count)...(-1)) else { return nil }
        let start = axis < 0 ? axis + rank : axis
        guard start == rank - layout.axes.count else { return nil }
        return .exact(FeatureLayout(rank: 2, axes: [-1], sizes: [layout.sizes.reduce(1, *)], entries: layout.entries))
    }

    private func unsqueeze(_ layout: FeatureLayout, axes: [Int]) -> ColumnProvenance? {
        let outputRank = layout.rank.map { $0 + axes.count }
        var inserted = Set<Int>()  // offsets in the output
        for axis in axes {
            if axis < 0 { inserted.insert(axis) } else if let outputRank { inserted.insert(axis - outputRank) } else { return nil }
        }
        // Output offsets from the end, skipping inserted ones, line up with input offsets -1, -2, ...
        var mapping: [Int: Int] = [:]
        var output = -1
        let deepest = (layout.axes.first ?? -1) - axes.count - 1
        for input in stride(from: -1, through: deepest, by: -1) {
            while inserted.contains(output) { output -= 1 }
            mapping[input] = output
            output -= 1
        }
        var result = layout
        result.axes = layout.axes.map { mapping[$0]! }
        result.rank = outputRank
        return .exact(result)
    }

    private func squeeze(_ layout: FeatureLayout, axes: [Int]) -> ColumnProvenance? {
        var removed: [Int] = []
        for axis in axes {
            guard let offset = layout.offset(ofAxis: axis) else { return nil }
            removed.append(offset)
        }
        var result = layout
        var keep: [Int] = []
        for (feature, offset) in layout.axes.enumerated() {
            if removed.contains(offset) {
                guard layout.sizes[feature] == 1 else { return nil }
                continue
            }
            keep.append(feature)
        }
        result.axes = keep.map { feature in
            let offset = layout.axes[feature]
            return offset + removed.filter { $0 > offset }.count
        }
        result.sizes = keep.map { layout.sizes[$0] }
        result.rank = layout.rank.map { $0 - axes.count }
        return .exact(result)
    }

    /// ONNX Slice (opset 10+: inputs; before: attributes) restricted to the feature axes it touches.
    private func slice(_ layout: FeatureLayout, _ node: Node) -> ColumnProvenance? {
        let starts: [Int?], ends: [Int?]
        var axes: [Int?]?, steps: [Int?]?
        if node.inputs.count >= 3 {
            guard let s = ints(node.inputs[1]), let e = ints(node.inputs[2]), s.count == e.count else { return nil }
            starts = s
            ends = e
            axes = node.inputs.count > 3 && !node.inputs[3].isEmpty ? ints(node.inputs[3]) : nil
            steps = node.inputs.count > 4 && !node.inputs[4].isEmpty ? ints(node.inputs[4]) : nil
            if node.inputs.count > 3, !node.inputs[3].isEmpty, axes == nil { return nil }
        } else {
            guard let s = try? node.ints("starts"), let e = try? node.ints("ends") else { return nil }
            starts = s
            ends = e
            axes = (try? node.ints("axes"))?.map { $0 }
            steps = nil
        }
        var result = layout
        for position in starts.indices {
            let axis: Int
            if let axes {
                guard position < axes.count, let given = axes[position] else { return nil }
                axis = given
            } else {
                axis = position
            }
            guard let offset = result.offset(ofAxis: axis) else { return nil }
            guard let feature = result.axes.firstIndex(of: offset) else { continue }  // a batch or sequence axis
            let size = result.sizes[feature]
            guard let start = starts[position], let end = ends[position] else { return nil }
            let step = steps.map { position < $0.count ? $0[position] : 1 } ?? 1
            guard let step, step != 0 else { return nil }
            result = result.selecting(sliceIndices(size: size, start: start, end: end, step: step), along: feature)
        }
        return .exact(result)
    }

    private func split(_ state: ColumnProvenance, _ node: Node) -> [(String, ColumnProvenance)] {
        guard case .exact(let layout) = state else { return node.outputs.map { ($0, state) } }
        let bounded = ColumnProvenance.bounded(layout.columns)
        let axis = (try? node.int("axis", default: 0)) ?? 0
        guard let offset = layout.offset(ofAxis: axis) else { return node.outputs.map { ($0, bounded) } }
        guard let feature = layout.axes.firstIndex(of: offset) else {
            return node.outputs.map { ($0, state) }  // splitting a batch or sequence axis keeps the features
        }
        let size = layout.sizes[feature]
        var parts: [Int]?
        if node.inputs.count > 1, !node.inputs[1].isEmpty {
            if let values = ints(node.inputs[1]), values.allSatisfy({ $0 != nil }) { parts = values.map { $0! } }
        } else if let given = try? node.ints("split") {
            parts = given
        } else {
            // Equal parts; with `num_outputs` (opset 18) the last part may be smaller.
            let count = node.outputs.count
            let chunk = (size + count - 1) / count
            parts = (0..<count).map { min(chunk, max(0, size - $0 * chunk)) }
        }
        guard let parts, parts.count == node.outputs.count, parts.reduce(0, +) == size else {
            return node.outputs.map { ($0, bounded) }
        }
        var start = 0
        var result: [(String, ColumnProvenance)] = []
        for (output, length) in zip(node.outputs, parts) {
            result.append((output, .exact(layout.selecting(Array(start..<(start + length)), along: feature))))
            start += length
        }
        return result
    }

    private func concat(_ node: Node) -> ColumnProvenance? {
        guard let axis = try? node.int("axis") else { return nil }
        var layouts: [FeatureLayout] = []
        var untraced = false
        for input in node.inputs {
            switch states[input] {
            case .exact(let layout)?: layouts.append(layout)
            case .bounded?: return nil
            case nil: untraced = true
            }
        }
        guard var result = layouts.first, let offset = result.offset(ofAxis: axis) else { return nil }
        if let feature = result.axes.firstIndex(of: offset) {
            // Joining along a feature axis: every part must be traced, or the positions are unknown.
            guard !untraced else { return nil }
            for other in layouts.dropFirst() {
                guard let joined = result.concatenating(other, along: feature) else { return nil }
                result = joined
            }
        } else {
            // Joining along a batch or sequence axis (a KV cache): positions keep their columns.
            for other in layouts.dropFirst() {
                guard let merged = result.merging(other) else { return nil }
                result = merged
            }
        }
        return .exact(result)
    }
}

/// The positions ONNX Slice takes from an axis of `size`, with its clamping rules.
func sliceIndices(size: Int, start: Int, end: Int, step: Int) -> [Int] {
    var start = start < 0 ? start + size : start
    var end = end < 0 ? end + size : end
    if step > 0 {
        start = min(max(start, 0), size)
        end = min(max(end, 0), size)
        return start < end ? Array(stride(from: start, to: end, by: step)) : []
    }
    start = min(max(start, 0), size - 1)
    end = min(max(end, -1), size - 1)
    return start > end ? Array(stride(from: start, to: end, by: step)) : []
}
