import ONNXGraph

/// `com.microsoft.RotaryEmbedding` (onnxruntime `docs/ContribOperators.md`, `contrib_ops/cpu/bert/rotary_embedding.cc`):
/// the rotary position embedding (Su et al., arXiv:2104.09864) with cos/sin tables, as onnxruntime's optimizer writes
/// it for Llama-style models (before MultiHeadAttention).
///
/// Letters: B batch, S sequence, N heads, H head size, R the rotary dimension (2 · cos_cache.shape[1]).
///
/// Inputs: input `[B, S, N·H]` (N from `num_heads`, or `N·H / R` when `num_heads` is 0) or `[B, N, S, H]`;
/// position_ids int64 `[1]` (a start offset: position `start + s`) or `[B, S]`; cos_cache and sin_cache
/// `[max_position, R/2]`. Attributes `interleaved` (0), `num_heads` (0), `rotary_embedding_dim` (0: R from the
/// tables); `scale` other than 1 and `is_packed_batching` are refused. Output: the input's shape, every head vector
/// rotated at its position (`Rotation`), dimensions from R on unchanged.
///
/// Backward: `dX` = the transposed rotation of `dY` (sin negated); `dcos[p, i] += dy₁x₁ + dy₂x₂`,
/// `dsin[p, i] += dy₂x₁ − dy₁x₂` over the vectors at position p.
struct RotaryEmbedding: Operator {
    static let opType = "RotaryEmbedding"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let interleaved: Bool
    let numHeads: Int
    let rotaryDimension: Int
    /// ONNX's input order (`RotaryEmbedding23`).
    var onnxOrder = false

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        interleaved = try node.int("interleaved", default: 0) != 0
        numHeads = try node.int("num_heads", default: 0)
        rotaryDimension = try node.int("rotary_embedding_dim", default: 0)
        let scale = try node.float("scale", default: 1)
        guard scale == 1 else { throw refuse("scale", "= \(scale) is not supported; only 1 is") }
        let packed = try node.int("is_packed_batching", default: 0)
        guard packed == 0 else { throw refuse("is_packed_batching", "= \(packed) is not supported; only 0 is") }
    }

    /// The input viewed as head vectors: their count, the rotation, and where vector (b, s, n) starts.
    private struct Layout {
        let batch: Int, sequence: Int, heads: Int
        let rotation: Rotation
        let positions: [Int]
        let fourDimensional: Bool

        func offset(_ b: Int, _ s: Int, _ n: Int) -> Int {
            fourDimensional ? ((b * heads + n) * sequence + s) * rotation.headSize
                            : ((b * sequence + s) * heads + n) * rotation.headSize
        }

        func forEachVector(_ body: (_ offset: Int, _ position: Int) -> Void) {
            for b in 0..<batch {
                for s in 0..<sequence {
                    for n in 0..<heads { body(offset(b, s, n), positions[b * sequence + s]) }
                }
            }
        }
    }

    /// The inputs in this op's order (input, position_ids, cos_cache, sin_cache); ONNX's RotaryEmbedding-23 orders
    /// them (X, cos_cache, sin_cache, position_ids).
    func inputOrder(_ inputs: [Tensor?]) -> [Tensor?] {
        onnxOrder ? [inputs.optional(0), inputs.optional(3), inputs.optional(1), inputs.optional(2)] : inputs
    }

    private func layout(_ given: [Tensor?]) throws(KernelError) -> Layout {
        let inputs = inputOrder(given)
        let input = try inputs.required(0)
        var cos = try inputs.required(2), sin = try inputs.required(3)
        if inputs.optional(1) == nil, cos.rank == 3, sin.shape == cos.shape {
            // ONNX 23 without position_ids: tables per token, [B, S, R/2], read as rows b·S + s.
            cos = cos.reshaped([cos.shape[0] * cos.shape[1], cos.shape[2]])
            sin = sin.reshaped(cos.shape)
        }
        guard input.rank == 3 || input.rank == 4, case .float = input.storage else {
            throw KernelError("input must be a floating-point [batch, sequence, hidden] or [batch, heads, sequence, head] "
                              + "tensor, got \(input.dataType)\(input.shape)")
        }
        guard cos.rank == 2, cos.shape[1] > 0 else { throw KernelError("cos_cache must be 2-D, got \(cos.shape)") }
        let fourDimensional = input.rank == 4
        let batch = input.shape[0], sequence = fourDimensional ? input.shape[2] : input.shape[1]
        let headSize: Int, heads: Int
        if fourDimensional {
            (heads, headSize) = (input.shape[1], input.shape[3])
        } else {
            let hidden = input.shape[2]
            let size = numHeads > 0 ? hidden / numHeads : (rotaryDimension > 0 ? rotaryDimension : 2 * cos.shape[1])
            guard size > 0, hidden % size == 0 else {
                throw KernelError("hidden size \(hidden) does not divide into heads (num_heads \(numHeads))")
            }
            (heads, headSize) = (hidden / size, size)
        }
        guard rotaryDimension == 0 || rotaryDimension == 2 * cos.shape[1] else {
            throw KernelError("rotary_embedding_dim \(rotaryDimension) must be twice cos_cache's second dimension \(cos.shape[1])")
        }
        let rotation = try Rotation(cos: cos, sin: sin, headSize: headSize, interleaved: interleaved)
        var positions: [Int]
        guard let idTensor = inputs.optional(1) else {
            guard rotation.rows == batch * sequence else {
                throw KernelError("without position_ids, cos_cache must be [\(batch), \(sequence), R/2]")
            }
            return Layout(batch: batch, sequence: sequence, heads: heads, rotation: rotation,
                          positions: Array(0..<(batch * sequence)), fourDimensional: fourDimensional)
        }
        let ids = try idTensor.intValues("position_ids")
        if ids.count == 1 {
            positions = (0..<(batch * sequence)).map { ids[0] + $0 % sequence }
        } else {
            guard ids.count == batch * sequence else {
                throw KernelError("position_ids must have 1 or \(batch)·\(sequence) values, got \(ids.count)")
            }
            positions = ids
        }
        guard let maximum = positions.max(), maximum < rotation.rows, positions.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("positions must be in 0..<\(rotation.rows) (the rows of cos_cache)")
        }
        return Layout(batch: batch, sequence: sequence, heads: heads, rotation: rotation, positions: positions,
                      fourDimensional: fourDimensional)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0), layout = try layout(inputs)
        var output = [Float](repeating: 0, count: input.count)
        input.floats.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                layout.forEachVector { offset, position in
                    layout.rotation.rotate(x.baseAddress! + offset, y.baseAddress! + offset, position: position, inverse: false)
                }
            }
        }
        return [Tensor(shape: input.shape, floats: roundedToPrecision(output, input.dataType), dataType: input.dataType)]
    }
}

extension RotaryEmbedding: DifferentiableOperator {
    // dX = Rotation(dY, −sin); dcos[p, i] += dy₁x₁ + dy₂x₂, dsin[p, i] += dy₂x₁ − dy₁x₂
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let input = try context.input(0), layout = try layout(context.inputs)
        let dY = context.outputGradient().floats, x = input.floats
        var dX = [Float](repeating: 0, count: input.count)
        var dCos = [Float](repeating: 0, count: layout.rotation.cos.count), dSin = dCos
        let (cosIndex, sinIndex, idsIndex) = onnxOrder ? (1, 2, 3) : (2, 3, 1)
        let wantTables = context.wants(cosIndex) || context.wants(sinIndex)
        dY.withUnsafeBufferPointer { dy in
            x.withUnsafeBufferPointer { x in
                dX.withUnsafeMutableBufferPointer { dx in
                    layout.forEachVector { offset, position in
                        layout.rotation.rotate(dy.baseAddress! + offset, dx.baseAddress! + offset, position: position, inverse: true)
                        if wantTables {
                            layout.rotation.addTableGradients(dy.baseAddress! + offset, x.baseAddress! + offset,
                                                              position: position, dCos: &dCos, dSin: &dSin)
                        }
                    }
                }
            }
        }
        func tensor(_ values: [Float], _ index: Int) throws -> Tensor? {
            guard context.wants(index) else { return nil }
            let like = try context.input(index)
            return Tensor(shape: like.shape, floats: values, dataType: like.dataType)
        }
        var result = [Tensor?](repeating: nil, count: max(context.inputs.count, 4))
        result[0] = try tensor(dX, 0)
        result[cosIndex] = try tensor(dCos, cosIndex)
        result[sinIndex] = try tensor(dSin, sinIndex)
        result[idsIndex] = nil
        return Array(result.prefix(context.inputs.count))
    }
}

/// ONNX `RotaryEmbedding` (opset 23, https://onnx.ai/onnx/operators/onnx__RotaryEmbedding.html; onnxruntime
/// `core/providers/cpu/llm/rotary_embedding.cc`): the math of `com.microsoft.RotaryEmbedding` with the inputs in
/// another order, (X, cos_cache, sin_cache, position_ids), position_ids optional (then cos_cache and sin_cache are
/// per token, `[B, S, R/2]`), and no `scale` or `is_packed_batching`. Runs through `RotaryEmbedding`.
///
/// Backward: as `RotaryEmbedding`'s.
struct RotaryEmbedding23: Operator {
    static let opType = "RotaryEmbedding"
    static let sinceVersions = [23]

    private var embedding: RotaryEmbedding

    init(node: Node, version: Int) throws {
        embedding = try RotaryEmbedding(node: node, version: 1)
        embedding.onnxOrder = true
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] { try embedding.run(inputs) }
}

extension RotaryEmbedding23: DifferentiableOperator {
    // dX = Rotation(dY, −sin); dcos, dsin as RotaryEmbedding's
    func gradient(_ context: GradientContext) throws -> [Tensor?] { try embedding.gradient(context) }
}

/// The rotation of one head vector of H values at a position, from cos/sin tables `[max_position, R/2]`, as
/// onnxruntime's RotaryEmbedding and GroupQueryAttention apply it. Non-interleaved, for i < R/2:
/// `y[i] = x[i]·cos − x[i+R/2]·sin`, `y[i+R/2] = x[i+R/2]·cos + x[i]·sin`; interleaved, the pairs (2i, 2i+1);
/// dimensions from R on pass through. Its transpose is the same rotation with sin negated.
struct Rotation {
    let headSize: Int
    /// R/2, the table's second dimension.
    let half: Int
    let rows: Int
    let interleaved: Bool
    let cos: [Float], sin: [Float]

    init(cos: Tensor, sin: Tensor, headSize: Int, interleaved: Bool) throws(KernelError) {
        guard cos.rank == 2, sin.shape == cos.shape, case .float(let cosValues) = cos.storage,
              case .float(let sinValues) = sin.storage else {
            throw KernelError("cos_cache and sin_cache must be floating-point tables of one 2-D shape, got \(cos.shape) and \(sin.shape)")
        }
        guard cos.shape[1] > 0, 2 * cos.shape[1] <= headSize else {
            throw KernelError("cos_cache is \(cos.shape): its second dimension must be in 1...head_size/2 = \(headSize / 2)")
        }
        (self.headSize, half, rows, self.interleaved) = (headSize, cos.shape[1], cos.shape[0], interleaved)
        (self.cos, self.sin) = (cosValues, sinValues)
    }

    /// The two dimensions rotated together by table column i.
    @inline(__always)
    func pair(_ i: Int) -> (Int, Int) { interleaved ? (2 * i, 2 * i + 1) : (i, i + half) }

    /// `y` = `x` rotated at `position` (H values each); `inverse` applies the transpose (sin negated).
    func rotate(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, position: Int, inverse: Bool) {
        for d in 0..<headSize { y[d] = x[d] }
        let row = position * half
        for i in 0..<half {
            let c = cos[row + i], s = inverse ? -sin[row + i] : sin[row + i]
            let (first, second) = pair(i)
            y[first] = x[first] * c - x[second] * s
            y[second] = x[second] * c + x[first] * s
        }
    }

    /// Adds the table gradients of one rotated vector: `dcos[p, i] += dy₁x₁ + dy₂x₂`, `dsin[p, i] += dy₂x₁ − dy₁x₂`,
    /// `x` the vector before the rotation and `dy` the gradient after it.
    func addTableGradients(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, position: Int,
                           dCos: inout [Float], dSin: inout [Float]) {
        let row = position * half
        for i in 0..<half {
            let (first, second) = pair(i)
            dCos[row + i] += dy[first] * x[first] + dy[second] * x[second]
            dSin[row + i] += dy[second] * x[first] - dy[first] * x[second]
        }
    }
}
