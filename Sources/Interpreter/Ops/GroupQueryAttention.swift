import Foundation
import ONNXGraph

/// `com.microsoft.GroupQueryAttention` (onnxruntime `docs/ContribOperators.md`; CPU kernel
/// `contrib_ops/cpu/bert/group_query_attention.cc`, `gqa_attention_base.h`, `group_query_attention_helper.h`):
/// causal multi-head attention where `num_heads` query heads share `kv_num_heads` key/value heads, with the KV cache
/// and the rotary embedding inside the op. onnxruntime-genai's model builder writes one per layer.
///
/// Letters: B batch, S new tokens, Nq / Nkv query / key-value heads, H head size, P past length, L present length
/// `max(total_sequence_length, P)`, R the rotary dimension (2 · cos_cache.shape[1]).
///
/// Inputs: 0 query `[B, S, Nq·H]`, or packed `[B, S, (Nq + 2·Nkv)·H]` (q, then k, then v columns) when key and value
/// are omitted; 1, 2 key / value `[B, S, Nkv·H]`; 3, 4 past_key / past_value `[B, Nkv, P, H]` (optional, P may be
/// 0); 5 seqlens_k int32 `[B]`, each sequence's total length − 1; 6 total_sequence_length int32 scalar; 7, 8
/// cos_cache / sin_cache `[max_position, R/2]` with `do_rotary`. Inputs 9 and on (position_ids, attention_bias,
/// head_sink, quantised-cache scales, q/k norm weights) are refused at load.
/// Outputs: output `[B, S, Nq·H]`, present_key / present_value `[B, Nkv, L, H]`.
///
/// Per sequence b, with `T = seqlens_k[b] + 1`: a first prompt (`S == total_sequence_length`) has no past; otherwise
/// `past = T − S` rows of past_key/past_value are kept (S > 1 with a past needs B = 1, as in onnxruntime). Every
/// sequence must be right-padded: the op cannot express another mask. Row s sits at position `past + s` (1 for a
/// padded row, `past + s >= T`, as onnxruntime sets it). With `do_rotary`, q and k are rotated at that position
/// (non-interleaved: `y[i] = x[i]·cos − x[i+R/2]·sin`, `y[i+R/2] = x[i+R/2]·cos + x[i]·sin` for i < R/2; interleaved:
/// the pairs (2i, 2i+1); dimensions from R on pass through). Present = past rows `[0, past)` then the S new
/// (rotated) k / v rows, zeros after. Query row s of query head h attends, through key/value head
/// `h / (Nq/Nkv)`, to the keys `[lo, hi)` with `hi = min(past + s + 1, T)` and, with `local_window_size` W > 0,
/// `lo = max(0, hi − W)`, the last W keys (else 0; measured on onnxruntime 1.32, whose window is W keys where older
/// kernels kept W + 1):
///
///     z = scale · q·kᵀ            (scale 0 means 1/√H)
///     z = softcap · tanh(z / softcap)   when softcap > 0
///     output = softmax(z over [lo, hi)) · v
///
/// onnxruntime leaves padded query rows undefined; here they attend to the whole sequence.
///
/// Backward (recomputing the probabilities p): `dV_j += p_j · dO`, `dP_j = dO · v_j`,
/// `dZ_j = p_j (dP_j − Σ p·dP)` (times `1 − tanh²(z/softcap)` with softcap), `dQr = scale · Σ_j dZ_j k_j`,
/// `dK_j += scale · dZ_j · qr`; present gradients add to the k / v rows they copy; the rotation's transpose (sin
/// negated) takes dQr and dKr back to q and k; `dcos[pos, i] += dy₁x₁ + dy₂x₂`, `dsin[pos, i] += dy₂x₁ − dy₁x₂`.
struct GroupQueryAttention: Operator {
    static let opType = "GroupQueryAttention"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let numHeads: Int
    let kvNumHeads: Int
    let scale: Float
    let softcap: Float
    let localWindowSize: Int
    let doRotary: Bool
    let rotaryInterleaved: Bool

    /// Optional inputs from index 9 on, which the interpreter does not implement.
    static let unsupportedInputs = [9: "position_ids", 10: "attention_bias", 11: "head_sink", 12: "k_scale",
                                    13: "v_scale", 14: "q_norm_weight", 15: "k_norm_weight"]

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        numHeads = try node.int("num_heads", default: 0)
        kvNumHeads = try node.int("kv_num_heads", default: 0)
        guard numHeads > 0, kvNumHeads > 0, numHeads % kvNumHeads == 0 else {
            throw refuse("num_heads", "= \(numHeads) with kv_num_heads = \(kvNumHeads): both are required, > 0, "
                         + "and num_heads must be a multiple of kv_num_heads")
        }
        scale = try node.float("scale", default: 0)
        softcap = try node.float("softcap", default: 0)
        localWindowSize = try node.int("local_window_size", default: -1)
        doRotary = try node.int("do_rotary", default: 0) != 0
        rotaryInterleaved = try node.int("rotary_interleaved", default: 0) != 0
        // Variants onnxruntime's CPU kernel has (or CUDA-only ones) that this interpreter does not.
        for (attribute, supported) in [("smooth_softmax", 0), ("qk_output", 0), ("kv_cache_bit_width", 0)] {
            let value = try node.int(attribute, default: supported)
            guard value == supported else {
                throw refuse(attribute, "= \(value) is not supported; only \(supported) is")
            }
        }
        guard try node.int("causal", default: 1) == 1 else { throw refuse("causal", "= 0 is not supported; only 1 is") }
        for attribute in ["k_quant_type", "v_quant_type"] {
            let value = try node.string(attribute, default: "NONE")
            guard value == "NONE" else {
                throw refuse(attribute, "= \(value): a quantised KV cache is not supported; only NONE is")
            }
        }
        for (index, name) in Self.unsupportedInputs.sorted(by: { $0.key < $1.key })
        where index < node.inputs.count && !node.inputs[index].isEmpty {
            throw refuse("input \(index) (\(name))", "is not supported; only inputs 0-8 (query, key, value, past_key, "
                         + "past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache) are")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let plan = try Plan(self, inputs)
        let (output, presentKey, presentValue) = plan.forward()
        let query = try inputs.required(0)
        let presentShape = [plan.batch, kvNumHeads, plan.presentLength, plan.headSize]
        return [
            Tensor(shape: [plan.batch, plan.sequence, numHeads * plan.headSize],
                   floats: roundedToPrecision(output, query.dataType), dataType: query.dataType),
            Tensor(shape: presentShape, floats: presentKey, dataType: query.dataType),
            Tensor(shape: presentShape, floats: presentValue, dataType: query.dataType),
        ]
    }
}

extension GroupQueryAttention: DifferentiableOperator {
    // See the type's comment: softmax and softcap backward per query row, the present copies, then the transposed
    // rotation for q and k (and the cos/sin tables' own gradients).
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let plan = try Plan(self, context.inputs)
        func present(_ index: Int) -> [Float]? {
            index < context.outputGradients.count ? context.outputGradients[index]?.floats : nil
        }
        let g = plan.backward(dOutput: context.outputGradient(0).floats, dPresentKey: present(1),
                              dPresentValue: present(2), wantTables: context.wants(7) || context.wants(8))
        func tensor(_ values: [Float], like index: Int) throws -> Tensor? {
            guard context.wants(index) else { return nil }
            let input = try context.input(index)
            return Tensor(shape: input.shape, floats: values, dataType: input.dataType)
        }
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        result[0] = try tensor(g.query, like: 0)
        if !plan.packed {
            result[1] = try tensor(g.key, like: 1)
            result[2] = try tensor(g.value, like: 2)
        }
        if plan.pastLength > 0 || context.inputs.optional(3) != nil {
            if context.inputs.optional(3) != nil { result[3] = try tensor(g.pastKey, like: 3) }
            if context.inputs.optional(4) != nil { result[4] = try tensor(g.pastValue, like: 4) }
        }
        if plan.rotaryHalf > 0 {
            result[7] = try tensor(g.cos, like: 7)
            result[8] = try tensor(g.sin, like: 8)
        }
        return result
    }
}

extension GroupQueryAttention {
    /// One call's shapes, per-sequence lengths and positions, checked against each other; runs forward and backward.
    struct Plan {
        let batch: Int, sequence: Int, headSize: Int
        let numHeads: Int, kvNumHeads: Int, groupSize: Int
        let packed: Bool
        /// Width of a query row: `(Nq + 2·Nkv)·H` packed, `Nq·H` otherwise.
        let queryWidth: Int
        let pastLength: Int, presentLength: Int
        /// Per sequence: kept past rows and total length T.
        let past: [Int], total: [Int]
        /// Per sequence and new row: the rotary position.
        let positions: [Int]
        let alpha: Float, softcap: Float, window: Int
        /// The rotation of q and k with `do_rotary`.
        let rotation: Rotation?
        var rotaryHalf: Int { rotation?.half ?? 0 }
        let query: [Float], key: [Float], value: [Float], pastKey: [Float], pastValue: [Float]

        init(_ op: GroupQueryAttention, _ inputs: [Tensor?]) throws(KernelError) {
            let query = try inputs.required(0)
            let key = inputs.optional(1), value = inputs.optional(2)
            guard query.rank == 3, case .float = query.storage else {
                throw KernelError("query must be a floating-point [batch, sequence, hidden] tensor, got \(query.dataType)\(query.shape)")
            }
            numHeads = op.numHeads
            kvNumHeads = op.kvNumHeads
            groupSize = op.numHeads / op.kvNumHeads
            (batch, sequence, queryWidth) = (query.shape[0], query.shape[1], query.shape[2])
            packed = key == nil && value == nil
            let heads = packed ? numHeads + 2 * kvNumHeads : numHeads
            guard queryWidth % heads == 0 else {
                throw KernelError("query width \(queryWidth) is not a multiple of \(heads) heads"
                                  + (packed ? " (packed q, k, v: num_heads + 2·kv_num_heads)" : ""))
            }
            headSize = queryWidth / heads
            if !packed {
                guard let key, let value, key.shape == [batch, sequence, kvNumHeads * headSize], value.shape == key.shape else {
                    throw KernelError("key and value must both be given with shape [\(batch), \(sequence), \(kvNumHeads * headSize)]"
                                      + ", got \(key.map { "\($0.shape)" } ?? "none") and \(value.map { "\($0.shape)" } ?? "none")")
                }
            }
            let pastKey = inputs.optional(3), pastValue = inputs.optional(4)
            guard (pastKey == nil) == (pastValue == nil) else { throw KernelError("past_key and past_value must be given together") }
            if let pastKey, let pastValue {
                guard pastKey.rank == 4, pastKey.shape[0] == batch, pastKey.shape[1] == kvNumHeads,
                      pastKey.shape[3] == headSize, pastValue.shape == pastKey.shape else {
                    throw KernelError("past_key / past_value must be [\(batch), \(kvNumHeads), past, \(headSize)], got "
                                      + "\(pastKey.shape) and \(pastValue.shape)")
                }
                pastLength = pastKey.shape[2]
            } else {
                pastLength = 0
            }
            let seqlens = try inputs.required(5).intValues("seqlens_k")
            let totalSequence = try Int(inputs.required(6).scalarValue("total_sequence_length"))
            guard seqlens.count == batch else { throw KernelError("seqlens_k has \(seqlens.count) values for batch \(batch)") }
            presentLength = max(totalSequence, pastLength)
            let firstPrompt = sequence == totalSequence
            if !firstPrompt && sequence > 1 && batch != 1 {
                throw KernelError("sequence length \(sequence) with total_sequence_length \(totalSequence) (a prompt after a past)"
                                  + " needs batch 1, as in onnxruntime; got batch \(batch)")
            }
            var past: [Int] = [], total: [Int] = [], positions: [Int] = []
            for b in 0..<batch {
                let length = seqlens[b] + 1
                let kept = firstPrompt ? 0 : length - sequence
                guard length >= 1, length <= presentLength, kept >= 0, kept <= pastLength, kept + sequence <= presentLength else {
                    throw KernelError("seqlens_k[\(b)] = \(seqlens[b]) does not fit sequence \(sequence), past \(pastLength) and "
                                      + "total_sequence_length \(totalSequence)")
                }
                past.append(kept)
                total.append(length)
                for s in 0..<sequence { positions.append(kept + s < length ? kept + s : 1) }
            }
            (self.past, self.total, self.positions) = (past, total, positions)
            alpha = op.scale == 0 ? 1 / Float(headSize).squareRoot() : op.scale
            softcap = op.softcap
            window = op.localWindowSize
            if op.doRotary {
                guard let cos = inputs.optional(7), let sin = inputs.optional(8) else {
                    throw KernelError("do_rotary needs cos_cache and sin_cache (inputs 7 and 8)")
                }
                let rotation = try Rotation(cos: cos, sin: sin, headSize: headSize, interleaved: op.rotaryInterleaved)
                let maximum = positions.max() ?? 0
                guard maximum < rotation.rows else {
                    throw KernelError("position \(maximum) is past the \(rotation.rows) rows of cos_cache")
                }
                self.rotation = rotation
            } else {
                rotation = nil
            }
            self.query = query.floats
            self.key = key?.floats ?? []
            self.value = value?.floats ?? []
            self.pastKey = pastKey?.floats ?? []
            self.pastValue = pastValue?.floats ?? []
        }

        /// Offset of head `head`'s H values for token (b, s) in the query input (packed heads: q, then k, then v).
        func queryOffset(_ b: Int, _ s: Int, _ head: Int) -> Int { (b * sequence + s) * queryWidth + head * headSize }

        /// The new k (or v) row of (b, s, kv head g): from the packed query or from key / value.
        func newRow(_ values: Bool, _ b: Int, _ s: Int, _ g: Int) -> (array: KeyPath<Plan, [Float]>, offset: Int) {
            if packed { return (\.query, queryOffset(b, s, numHeads + (values ? kvNumHeads : 0) + g)) }
            return (values ? \.value : \.key, ((b * sequence + s) * kvNumHeads + g) * headSize)
        }

        /// Rotates `x` (H values) at `position` into `y` (a copy without `do_rotary`); `inverse` applies the
        /// transpose (sin negated).
        func rotate(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, position: Int, inverse: Bool) {
            guard let rotation else {
                for d in 0..<headSize { y[d] = x[d] }
                return
            }
            rotation.rotate(x, y, position: position, inverse: inverse)
        }

        /// The keys query row s of sequence b attends to.
        func keyRange(_ b: Int, _ s: Int) -> Range<Int> {
            let hi = min(past[b] + s + 1, total[b])
            let lo = window > 0 ? max(0, hi - window) : 0
            return lo..<hi
        }

        /// Rotated queries `[B, Nq, S, H]` and the keys / values each sequence attends to, `[B, Nkv, L, H]` (past
        /// rows, then the new rotated rows, zeros after): the latter are also the present outputs.
        func prepared() -> (queries: [Float], keys: [Float], values: [Float]) {
            let H = headSize
            var queries = [Float](repeating: 0, count: batch * numHeads * sequence * H)
            var keys = [Float](repeating: 0, count: batch * kvNumHeads * presentLength * H)
            var values = keys
            queries.withUnsafeMutableBufferPointer { queries in
                keys.withUnsafeMutableBufferPointer { keys in
                    values.withUnsafeMutableBufferPointer { values in
                        for b in 0..<batch {
                            for s in 0..<sequence {
                                let position = positions[b * sequence + s]
                                for h in 0..<numHeads {
                                    query.withUnsafeBufferPointer { q in
                                        rotate(q.baseAddress! + queryOffset(b, s, h),
                                               queries.baseAddress! + ((b * numHeads + h) * sequence + s) * H,
                                               position: position, inverse: false)
                                    }
                                }
                                for g in 0..<kvNumHeads {
                                    let row = ((b * kvNumHeads + g) * presentLength + past[b] + s) * H
                                    let (keyArray, keyOffset) = newRow(false, b, s, g)
                                    self[keyPath: keyArray].withUnsafeBufferPointer { k in
                                        rotate(k.baseAddress! + keyOffset, keys.baseAddress! + row, position: position, inverse: false)
                                    }
                                    let (valueArray, valueOffset) = newRow(true, b, s, g)
                                    let source = self[keyPath: valueArray]
                                    for d in 0..<H { values[row + d] = source[valueOffset + d] }
                                }
                            }
                            for g in 0..<kvNumHeads {
                                for j in 0..<past[b] {
                                    let from = ((b * kvNumHeads + g) * pastLength + j) * H
                                    let to = ((b * kvNumHeads + g) * presentLength + j) * H
                                    for d in 0..<H {
                                        keys[to + d] = pastKey[from + d]
                                        values[to + d] = pastValue[from + d]
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return (queries, keys, values)
        }

        /// The attention probabilities of query row (b, h, s) over `keyRange(b, s)`, and the capped scores'
        /// `tanh(z/softcap)` (for the softcap's derivative; empty without softcap).
        func probabilities(_ q: UnsafePointer<Float>, _ keys: UnsafePointer<Float>, _ range: Range<Int>)
            -> (p: [Float], tanh: [Float]) {
            var p = [Float](repeating: 0, count: range.count), t: [Float] = []
            for (index, j) in range.enumerated() { p[index] = alpha * vectorDot(q, keys + j * headSize, headSize) }
            if softcap > 0 {
                t = p.map { Foundation.tanh($0 / softcap) }
                p = t.map { softcap * $0 }
            }
            let maximum = p.max() ?? 0
            var sum: Float = 0
            for index in p.indices {
                p[index] = Foundation.exp(p[index] - maximum)
                sum += p[index]
            }
            for index in p.indices { p[index] /= sum }
            return (p, t)
        }

        func forward() -> (output: [Float], presentKey: [Float], presentValue: [Float]) {
            let (queries, keys, values) = prepared()
            let H = headSize
            var output = [Float](repeating: 0, count: batch * sequence * numHeads * H)
            queries.withUnsafeBufferPointer { queries in
                keys.withUnsafeBufferPointer { keys in
                    values.withUnsafeBufferPointer { values in
                        output.withUnsafeMutableBufferPointer { output in
                            Parallel.forEachChunk(batch * numHeads, minimumPerThread: 1) { range in
                                for bh in range {
                                    let (b, h) = (bh / numHeads, bh % numHeads), g = h / groupSize
                                    let kv = (b * kvNumHeads + g) * presentLength * H
                                    for s in 0..<sequence {
                                        let q = queries.baseAddress! + ((b * numHeads + h) * sequence + s) * H
                                        let keyRange = keyRange(b, s)
                                        let (p, _) = probabilities(q, keys.baseAddress! + kv, keyRange)
                                        let out = output.baseAddress! + (b * sequence + s) * numHeads * H + h * H
                                        for (index, j) in keyRange.enumerated() {
                                            let v = values.baseAddress! + kv + j * H
                                            for d in 0..<H { out[d] += p[index] * v[d] }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return (output, keys, values)
        }

        struct Gradients {
            var query: [Float], key: [Float], value: [Float], pastKey: [Float], pastValue: [Float]
            var cos: [Float], sin: [Float]
        }

        func backward(dOutput: [Float], dPresentKey: [Float]?, dPresentValue: [Float]?, wantTables: Bool) -> Gradients {
            let (queries, keys, values) = prepared()
            let H = headSize
            // Gradients of the rotated queries [B, Nq, S, H] and of the attended keys / values [B, Nkv, L, H].
            var dQueries = [Float](repeating: 0, count: queries.count)
            var dKeys = dPresentKey ?? [Float](repeating: 0, count: keys.count)
            var dValues = dPresentValue ?? [Float](repeating: 0, count: values.count)
            queries.withUnsafeBufferPointer { queries in
                keys.withUnsafeBufferPointer { keys in
                    values.withUnsafeBufferPointer { values in
                        dOutput.withUnsafeBufferPointer { dOutput in
                            dQueries.withUnsafeMutableBufferPointer { dQueries in
                                dKeys.withUnsafeMutableBufferPointer { dKeys in
                                    dValues.withUnsafeMutableBufferPointer { dValues in
                                        let dQ = dQueries.baseAddress!, dK = dKeys.baseAddress!, dV = dValues.baseAddress!
                                        // Parallel over (b, kv head): the query heads of a group write the same dK, dV rows.
                                        Parallel.forEachChunk(batch * kvNumHeads, minimumPerThread: 1) { range in
                                            for bg in range {
                                                let (b, g) = (bg / kvNumHeads, bg % kvNumHeads)
                                                let kv = (b * kvNumHeads + g) * presentLength * H
                                                for h in g * groupSize..<(g + 1) * groupSize {
                                                    for s in 0..<sequence {
                                                        let qOffset = ((b * numHeads + h) * sequence + s) * H
                                                        let q = queries.baseAddress! + qOffset
                                                        let keyRange = keyRange(b, s)
                                                        let (p, t) = probabilities(q, keys.baseAddress! + kv, keyRange)
                                                        let dO = dOutput.baseAddress! + (b * sequence + s) * numHeads * H + h * H
                                                        var dP = [Float](repeating: 0, count: p.count)
                                                        var weighted: Float = 0
                                                        for (index, j) in keyRange.enumerated() {
                                                            let row = kv + j * H
                                                            dP[index] = vectorDot(dO, values.baseAddress! + row, H)
                                                            weighted += p[index] * dP[index]
                                                            for d in 0..<H { dV[row + d] += p[index] * dO[d] }
                                                        }
                                                        for (index, j) in keyRange.enumerated() {
                                                            var dZ = p[index] * (dP[index] - weighted)
                                                            if softcap > 0 { dZ *= 1 - t[index] * t[index] }
                                                            let scaled = alpha * dZ
                                                            let row = kv + j * H
                                                            for d in 0..<H {
                                                                dQ[qOffset + d] += scaled * keys[row + d]
                                                                dK[row + d] += scaled * q[d]
                                                            }
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // Back to the inputs: the rotation's transpose for q and k, the present layout for k, v and the past.
            var gradients = Gradients(
                query: [Float](repeating: 0, count: query.count), key: [Float](repeating: 0, count: key.count),
                value: [Float](repeating: 0, count: value.count), pastKey: [Float](repeating: 0, count: pastKey.count),
                pastValue: [Float](repeating: 0, count: pastValue.count),
                cos: [Float](repeating: 0, count: wantTables ? rotation?.cos.count ?? 0 : 0),
                sin: [Float](repeating: 0, count: wantTables ? rotation?.sin.count ?? 0 : 0))
            var scratch = [Float](repeating: 0, count: H)
            for b in 0..<batch {
                for s in 0..<sequence {
                    let position = positions[b * sequence + s]
                    for h in 0..<numHeads {
                        let from = ((b * numHeads + h) * sequence + s) * H
                        unrotate(dQueries, from, into: \.query, queryOffset(b, s, h), \.query, position, &gradients, &scratch, wantTables)
                    }
                    for g in 0..<kvNumHeads {
                        let row = ((b * kvNumHeads + g) * presentLength + past[b] + s) * H
                        let (keyArray, keyOffset) = newRow(false, b, s, g)
                        let valueOffset = newRow(true, b, s, g).1
                        if packed {
                            unrotate(dKeys, row, into: \.query, keyOffset, keyArray, position, &gradients, &scratch, wantTables)
                            for d in 0..<H { gradients.query[valueOffset + d] += dValues[row + d] }
                        } else {
                            unrotate(dKeys, row, into: \.key, keyOffset, keyArray, position, &gradients, &scratch, wantTables)
                            for d in 0..<H { gradients.value[valueOffset + d] += dValues[row + d] }
                        }
                    }
                }
                for g in 0..<kvNumHeads {
                    for j in 0..<past[b] {
                        let from = ((b * kvNumHeads + g) * presentLength + j) * H
                        let to = ((b * kvNumHeads + g) * pastLength + j) * H
                        for d in 0..<H {
                            gradients.pastKey[to + d] += dKeys[from + d]
                            gradients.pastValue[to + d] += dValues[from + d]
                        }
                    }
                }
            }
            return gradients
        }

        /// Adds the transposed rotation of `gradient[from..<from+H]` into `target[offset...]`, and the gradients of
        /// the cos / sin rows at `position` (from the unrotated input `source[offset...]`) when `wantTables`.
        private func unrotate(
            _ gradient: [Float], _ from: Int, into target: WritableKeyPath<Gradients, [Float]>, _ offset: Int,
            _ source: KeyPath<Plan, [Float]>,
            _ position: Int, _ gradients: inout Gradients, _ scratch: inout [Float], _ wantTables: Bool
        ) {
            gradient.withUnsafeBufferPointer { gradient in
                scratch.withUnsafeMutableBufferPointer { scratch in
                    rotate(gradient.baseAddress! + from, scratch.baseAddress!, position: position, inverse: true)
                }
            }
            for d in 0..<headSize { gradients[keyPath: target][offset + d] += scratch[d] }
            guard wantTables, let rotation else { return }
            gradient.withUnsafeBufferPointer { gradient in
                self[keyPath: source].withUnsafeBufferPointer { x in
                    rotation.addTableGradients(gradient.baseAddress! + from, x.baseAddress! + offset, position: position,
                                               dCos: &gradients.cos, dSin: &gradients.sin)
                }
            }
        }
    }
}
