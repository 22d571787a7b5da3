import ONNXGraph

/// `onnx_dpo.RotateHalfEmbedding(X, cos, sin)`: rotary position embedding in the "rotate half" form Hugging Face's
/// Llama, Qwen2, Phi-3 and GPT-NeoX write and torch's exporters spell out in seven ops (`GraphOptimizer
/// .fuseRotateHalf`), one pass over X instead of seven:
///
///     Y = X · cos + rotate(X) · sin,   rotate(X) = Concat(−X[..., split:], X[..., :split])   (along the last axis)
///
/// `cos` and `sin` broadcast to X and are not broadcast along the last axis (`[1, 1, T, d]` against X `[B, H, T,
/// d]`). `split` is where the two halves meet (d/2 in every model; any `0 < split < d` is computed as written).
/// Each product is rounded and then the sum, as the separate ops do. The op is internal to a session (its domain is
/// ours; no exported file contains it).
///
/// Backward: `dX = dY · cos + rotateᵀ(dY · sin)` with `rotateᵀ(G) = Concat(G[..., d − split:], −G[..., :d − split])`;
/// `dcos = Σ dY · X` and `dsin = Σ dY · rotate(X)` over the axes they were broadcast along.
struct RotateHalfEmbedding: Operator {
    static let opType = "RotateHalfEmbedding"
    static let domain = GraphOptimizer.internalDomain
    static let sinceVersions = [1]

    let split: Int
    /// The axis the graph's Slices cut (exporters write the positive index, 3 for `[B, H, T, d]`): it must be X's last.
    let axis: Int

    init(node: Node, version: Int) throws {
        split = try node.int("split", default: 0)
        axis = try node.int("axis", default: -1)
        guard split > 0 else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "split", reason: "must be positive, got \(split)")
        }
    }

    /// X's rows of `width` values, and for each run of rows the rows of cos and sin it reads.
    private struct Rows {
        let width: Int
        let rows: Int
        let plan: BroadcastPlan

        init(_ x: Tensor, _ cos: Tensor, _ sin: Tensor, split: Int, axis: Int) throws(KernelError) {
            guard try resolveAxis(axis, in: x.shape) == x.rank - 1 else {
                throw KernelError("the halves must be cut along X's last axis; axis \(axis) of X \(x.shape) is not")
            }
            guard let width = x.shape.last, width > split else {
                throw KernelError("X \(x.shape) must have more than split = \(split) values along its last axis")
            }
            guard cos.shape.last == width, sin.shape.last == width else {
                throw KernelError("cos \(cos.shape) and sin \(sin.shape) must have X's last dimension \(width)")
            }
            let lead = Array(x.shape.dropLast())
            let cosLead = Array(cos.shape.dropLast()), sinLead = Array(sin.shape.dropLast())
            guard cos.rank <= x.rank, sin.rank <= x.rank, try broadcastShape([lead, cosLead, sinLead]) == lead else {
                throw KernelError("cos \(cos.shape) and sin \(sin.shape) do not broadcast to X \(x.shape)")
            }
            self.width = width
            rows = lead.reduce(1, *)
            plan = BroadcastPlan(output: lead.isEmpty ? [1] : lead,
                                 operands: [cosLead.isEmpty ? [1] : cosLead, sinLead.isEmpty ? [1] : sinLead])
        }

        /// A new row-major array of X's size whose rows `row(x, c, s, y)` writes: `x` the row of `values`, `c` and
        /// `s` the rows of `cos` and `sin` it reads, `y` its own. Rows are split across cores.
        func map(_ values: [Float], _ cos: [Float], _ sin: [Float],
                 _ row: @escaping (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void)
            -> [Float] {
            let (plan, width) = (plan, width)
            return [Float](unsafeUninitializedCapacity: values.count) { out, initialized in
                initialized = values.count
                values.withUnsafeBufferPointer { values in
                    cos.withUnsafeBufferPointer { cos in
                        sin.withUnsafeBufferPointer { sin in
                            guard let xBase = values.baseAddress, let cBase = cos.baseAddress, let sBase = sin.baseAddress,
                                  let yBase = out.baseAddress else { return }
                            Parallel.forEachChunk(rows, minimumPerThread: max(1, 16_384 / width)) { range in
                                plan.forEachRun(in: range) { position, run, offsets, strides in
                                    for step in 0..<run {
                                        let index = position + step
                                        row(xBase + index * width, cBase + (offsets[0] + step * strides[0]) * width,
                                            sBase + (offsets[1] + step * strides[1]) * width, yBase + index * width)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let x = try inputs.required(0), cos = try inputs.required(1), sin = try inputs.required(2)
        guard case .float(let xs) = x.widenedStorage, case .float(let cs) = cos.widenedStorage,
              case .float(let ss) = sin.widenedStorage else {
            throw KernelError("RotateHalfEmbedding needs floating-point inputs, got \(x.dataType), \(cos.dataType), \(sin.dataType)")
        }
        let rows = try Rows(x, cos, sin, split: split, axis: axis)
        let (width, split) = (rows.width, split)
        let rest = width - split
        let y = rows.map(xs, cs, ss) { x, c, s, y in
            // rotate(X)[k] = −X[k + split] for k < width − split, X[k − (width − split)] after.
            for k in 0..<rest { y[k] = x[k] * c[k] + -x[k + split] * s[k] }
            for k in rest..<width { y[k] = x[k] * c[k] + x[k - rest] * s[k] }
        }
        return [Tensor(shape: x.shape, floats: roundedToPrecision(y, x.dataType), dataType: x.dataType)]
    }
}

extension RotateHalfEmbedding: DifferentiableOperator {
    // dX reads cos and sin; dcos reads X; dsin reads X.
    func savedValues(wanted: [Bool]) -> SavedValues {
        let wants = { (index: Int) in index < wanted.count && wanted[index] }
        return SavedValues(inputs: Set((wants(0) ? [1, 2] : []) + (wants(1) || wants(2) ? [0] : [])))
    }

    // dX = dY·cos + rotateᵀ(dY·sin); dcos = Σ dY·X, dsin = Σ dY·rotate(X) over the broadcast axes
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dy = context.outputGradient()
        var result: [Tensor?] = [nil, nil, nil]
        let (split, shape) = (split, dy.shape)
        if context.wants(0) {
            let cos = try context.input(1), sin = try context.input(2)
            let rows = try Rows(dy, cos, sin, split: split, axis: axis)
            let (width, rest) = (rows.width, rows.width - split)
            let dx = rows.map(dy.floats, cos.floats, sin.floats) { g, c, s, dx in
                // rotateᵀ(dY · sin)[j] = (dY · sin)[j + rest] for j < split, −(dY · sin)[j − split] after.
                for j in 0..<split { dx[j] = g[j] * c[j] + g[j + rest] * s[j + rest] }
                for j in split..<width { dx[j] = g[j] * c[j] + -(g[j - split] * s[j - split]) }
            }
            result[0] = Tensor(shape: shape, floats: dx, dataType: try context.inputType(0))
        }
        if context.wants(1) || context.wants(2) {
            let x = try context.input(0)
            let xs = x.floats, dys = dy.floats
            let width = shape.last ?? 1, rest = width - split
            var rotated = [Float](repeating: 0, count: xs.count)
            for row in 0..<(xs.count / max(width, 1)) {
                let base = row * width
                for k in 0..<rest { rotated[base + k] = -xs[base + k + split] }
                for k in rest..<width { rotated[base + k] = xs[base + k - rest] }
            }
            if context.wants(1) {
                let product = Tensor(shape: shape, floats: zip(dys, xs).map(*))
                result[1] = try reduceGradient(product, to: context.inputShape(1))
            }
            if context.wants(2) {
                let product = Tensor(shape: shape, floats: zip(dys, rotated).map(*))
                result[2] = try reduceGradient(product, to: context.inputShape(2))
            }
        }
        return result
    }
}
