import Foundation
import ONNXGraph

/// ONNX `Attention` (opsets 23 and 24; 24 adds input 6, `nonpad_kv_seqlen`), as the ONNX spec
/// (`onnx/defs/nn/defs.cc`, Operators.md) states it and onnxruntime's CPU kernel (`core/providers/cpu/llm/attention.cc`)
/// computes it; torch's dynamo exporter writes it for `scaled_dot_product_attention` at opset 23.
///
/// Letters: B batch, Nq / Nkv query / key-value heads (Nq a multiple of Nkv: GQA, or MQA with Nkv = 1), S query
/// tokens, L new key/value tokens, P past tokens, T = P + L, H the query/key head size, Hv the value head size.
///
/// Inputs: 0 Q `[B, Nq, S, H]`, or `[B, S, Nq·H]` with `q_num_heads`; 1 K `[B, Nkv, L, H]` or `[B, L, Nkv·H]` with
/// `kv_num_heads`; 2 V `[B, Nkv, L, Hv]` or `[B, L, Nkv·Hv]`; 3 attn_mask, broadcastable to `[B, Nq, S, T]`: bool
/// (true attends) or float (added to the scores), its last axis T (narrower with nonpad_kv_seqlen is refused, as
/// onnxruntime 1.32 does); 4, 5 past_key / past_value `[B, Nkv, P, H]` / `[.., Hv]`; 6 (24) nonpad_kv_seqlen int64 `[B]`: sequence
/// b's keys from `nonpad_kv_seqlen[b]` on are padding (K and V hold a whole external cache; no past then).
/// Outputs: Y (Q's rank: `[B, Nq, S, Hv]` or `[B, S, Nq·Hv]`), present_key / present_value `[B, Nkv, T, H]` (past,
/// then new rows), qk_matmul_output `[B, Nq, S, T]` at the stage `qk_matmul_output_mode` names (0 the scaled q·kᵀ,
/// 1 after softcap, 2 after the mask, 3 after the softmax).
///
///     z = softcap · tanh(scale · q·kᵀ / softcap)   (softcap > 0; scale defaults to 1/√H)
///     z = z + attn_mask                            (a false bool entry is −∞)
///     Y = softmax(z) · v, where with is_causal query s sees the keys [0, offset + s]: offset P, or with
///         nonpad_kv_seqlen `nonpad_kv_seqlen[b] − S` (bottom-right aligned; a negative offset leaves leading rows
///         with no key), else 0
///
/// A fully masked row gives a zero output (the spec since onnx 1.23; onnxruntime 1.32 agrees). The softmax is
/// computed in fp32 whatever `softmax_precision` says. The math and its backward are `ScaledDotProductAttention`'s.
struct Attention23: Operator {
    static let opType = "Attention"
    static let sinceVersions = [23, 24]

    let isCausal: Bool
    let queryHeads: Int?, kvHeads: Int?
    let scale: Float?
    let softcap: Float
    let scoresMode: ScaledDotProductAttention.ScoresOutput
    /// Whether the node names output 3 (qk_matmul_output).
    let wantsScores: Bool

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        let causal = try node.int("is_causal", default: 0)
        guard causal == 0 || causal == 1 else { throw refuse("is_causal", "= \(causal); 0 and 1 are supported") }
        isCausal = causal == 1
        queryHeads = try node.int("q_num_heads")
        kvHeads = try node.int("kv_num_heads")
        if let queryHeads, let kvHeads {
            guard queryHeads > 0, kvHeads > 0, queryHeads % kvHeads == 0 else {
                throw refuse("q_num_heads", "= \(queryHeads) with kv_num_heads = \(kvHeads): both must be > 0 and q_num_heads "
                             + "a multiple of kv_num_heads")
            }
        } else if queryHeads != nil || kvHeads != nil {
            throw refuse(queryHeads == nil ? "q_num_heads" : "kv_num_heads", "is missing: q_num_heads and kv_num_heads go together")
        }
        let scale = try node.float("scale", default: 0)
        self.scale = node.attributes["scale"] == nil ? nil : scale
        softcap = try node.float("softcap", default: 0)
        guard softcap >= 0 else { throw refuse("softcap", "= \(softcap): it must be 0 (off) or positive") }
        let mode = try node.int("qk_matmul_output_mode", default: 0)
        guard let scoresMode = ScaledDotProductAttention.ScoresOutput(rawValue: mode) else {
            throw refuse("qk_matmul_output_mode", "= \(mode); 0, 1, 2 and 3 are supported")
        }
        self.scoresMode = scoresMode
        _ = try node.int("softmax_precision", default: 1)  // a hint: the softmax runs in fp32 whatever it says
        let inputCount = version >= 24 ? 7 : 6
        if let extra = node.inputs.indices.dropFirst(inputCount).first(where: { !node.inputs[$0].isEmpty }) {
            throw refuse("input \(extra)\(extra == 6 ? " (nonpad_kv_seqlen)" : "")", "is not an input of Attention-\(version); "
                         + "only inputs 0-\(inputCount - 1) are" + (extra == 6 ? " (nonpad_kv_seqlen needs opset 24)" : ""))
        }
        wantsScores = node.outputs.count > 3 && !node.outputs[3].isEmpty
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let plan = try Plan(self, inputs)
        let p = plan.problem
        let (output, scores) = p.forward(q: plan.q, k: plan.k, v: plan.v, scores: wantsScores ? scoresMode : nil)
        let type = try inputs.required(0).dataType
        let y = plan.threeDimensional
            ? Tensor(shape: [p.batch, p.sequence, p.queryHeads * p.valueHeadSize],
                     floats: HeadLayout.merge(output, batch: p.batch, sequence: p.sequence, heads: p.queryHeads, size: p.valueHeadSize),
                     dataType: type)
            : Tensor(shape: [p.batch, p.queryHeads, p.sequence, p.valueHeadSize], floats: output, dataType: type)
        var results = [
            Tensor(shape: y.shape, floats: roundedToPrecision(y.floats, type), dataType: type),
            Tensor(shape: [p.batch, p.kvHeads, p.total, p.headSize], floats: plan.k, dataType: type),
            Tensor(shape: [p.batch, p.kvHeads, p.total, p.valueHeadSize], floats: plan.v, dataType: type),
        ]
        if let scores { results.append(Tensor(shape: p.scoresShape, floats: scores, dataType: type)) }
        return results
    }
}

extension Attention23: DifferentiableOperator {
    /// The rule recomputes the probabilities from the inputs; no output is kept.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: nil, outputs: []) }

    // dQ, dK, dV from ScaledDotProductAttention (the qk_matmul_output gradient enters at its stage); present gradients
    // add to the k / v rows they copy, the past rows going to past_key / past_value; a float attn_mask gets dz summed
    // over its broadcast axes.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let plan = try Plan(self, context.inputs)
        let p = plan.problem
        func upstream(_ index: Int) -> [Float]? {
            index < context.outputGradients.count ? context.outputGradients[index]?.floats : nil
        }
        var dOutput = context.outputGradient(0).floats
        if plan.threeDimensional {
            dOutput = HeadLayout.split(dOutput, batch: p.batch, sequence: p.sequence, heads: p.queryHeads, size: p.valueHeadSize)
        }
        let wantsMask = context.wants(3) && (try? context.inputType(3)) != .bool
        let g = p.backward(q: plan.q, k: plan.k, v: plan.v, dOutput: dOutput, dScores: upstream(3), mode: scoresMode,
                           wantTerms: wantsMask)
        var dKeys = g.k, dValues = g.v
        if let dPresent = upstream(1) { for i in dKeys.indices { dKeys[i] += dPresent[i] } }
        if let dPresent = upstream(2) { for i in dValues.indices { dValues[i] += dPresent[i] } }
        let (dPastKey, dNewKey) = HeadLayout.separate(dKeys, batch: p.batch, heads: p.kvHeads, pastLength: plan.pastLength,
                                                      newLength: plan.newLength, size: p.headSize)
        let (dPastValue, dNewValue) = HeadLayout.separate(dValues, batch: p.batch, heads: p.kvHeads, pastLength: plan.pastLength,
                                                          newLength: plan.newLength, size: p.valueHeadSize)
        func layout(_ values: [Float], _ length: Int, _ heads: Int, _ size: Int) -> [Float] {
            plan.threeDimensional ? HeadLayout.merge(values, batch: p.batch, sequence: length, heads: heads, size: size) : values
        }
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        func set(_ index: Int, _ values: @autoclosure () -> [Float]) throws {
            guard context.wants(index) else { return }
            result[index] = Tensor(shape: try context.inputShape(index), floats: values(), dataType: try context.inputType(index))
        }
        try set(0, layout(g.q, p.sequence, p.queryHeads, p.headSize))
        try set(1, layout(dNewKey, plan.newLength, p.kvHeads, p.headSize))
        try set(2, layout(dNewValue, plan.newLength, p.kvHeads, p.valueHeadSize))
        if wantsMask {
            result[3] = try reduceGradient(Tensor(shape: p.scoresShape, floats: g.scores), to: context.inputShape(3))
        }
        try set(4, dPastKey)
        try set(5, dPastValue)
        return result
    }
}

extension Attention23 {
    /// One call's inputs checked against each other and laid out per head: q `[B, Nq, S, H]`, the present k
    /// `[B, Nkv, T, H]` and v `[B, Nkv, T, Hv]`, and attn_mask as an additive term.
    struct Plan {
        let problem: ScaledDotProductAttention
        let q: [Float], k: [Float], v: [Float]
        let pastLength: Int, newLength: Int
        /// Whether Q, K, V (and Y) are `[B, S, N·H]`.
        let threeDimensional: Bool

        init(_ op: Attention23, _ inputs: [Tensor?]) throws(KernelError) {
            let query = try inputs.required(0), key = try inputs.required(1), value = try inputs.required(2)
            for (name, tensor) in [("Q", query), ("K", key), ("V", value)] {
                guard case .float = tensor.storage, tensor.rank == query.rank, tensor.rank == 3 || tensor.rank == 4 else {
                    throw KernelError("Q, K and V must be floating-point and all 3D or all 4D; \(name) is \(tensor.dataType)\(tensor.shape)"
                                      + " with Q \(query.shape)")
                }
            }
            threeDimensional = query.rank == 3
            let batch = query.shape[0]
            let queryHeads: Int, kvHeads: Int, sequence: Int, headSize: Int, valueHeadSize: Int
            var q = query.floats, newKeys = key.floats, newValues = value.floats
            if threeDimensional {
                guard let qHeads = op.queryHeads, let kHeads = op.kvHeads else {
                    throw KernelError("3D Q, K and V need the q_num_heads and kv_num_heads attributes")
                }
                (queryHeads, kvHeads, sequence, newLength) = (qHeads, kHeads, query.shape[1], key.shape[1])
                guard query.shape[2] % queryHeads == 0, key.shape[0] == batch, key.shape[2] == query.shape[2] / queryHeads * kvHeads,
                      value.shape[0] == batch, value.shape[1] == newLength, value.shape[2] % kvHeads == 0 else {
                    throw KernelError("Q \(query.shape), K \(key.shape) and V \(value.shape) do not fit q_num_heads \(queryHeads) and "
                                      + "kv_num_heads \(kvHeads)")
                }
                (headSize, valueHeadSize) = (query.shape[2] / queryHeads, value.shape[2] / kvHeads)
                q = HeadLayout.split(q, batch: batch, sequence: sequence, heads: queryHeads, size: headSize)
                newKeys = HeadLayout.split(newKeys, batch: batch, sequence: newLength, heads: kvHeads, size: headSize)
                newValues = HeadLayout.split(newValues, batch: batch, sequence: newLength, heads: kvHeads, size: valueHeadSize)
            } else {
                (queryHeads, sequence, headSize) = (query.shape[1], query.shape[2], query.shape[3])
                (kvHeads, newLength, valueHeadSize) = (key.shape[1], key.shape[2], value.shape[3])
                guard key.shape[0] == batch, key.shape[3] == headSize, value.shape[0] == batch, value.shape[1] == kvHeads,
                      value.shape[2] == newLength, kvHeads > 0, queryHeads % kvHeads == 0 else {
                    throw KernelError("Q \(query.shape), K \(key.shape) and V \(value.shape) must be [B, Nq, S, H], [B, Nkv, L, H] and "
                                      + "[B, Nkv, L, Hv] with Nq a multiple of Nkv")
                }
            }
            let pastKey = inputs.optional(4), pastValue = inputs.optional(5)
            guard (pastKey == nil) == (pastValue == nil) else { throw KernelError("past_key and past_value must be given together") }
            if let pastKey, let pastValue {
                guard pastKey.rank == 4, pastKey.shape[0] == batch, pastKey.shape[1] == kvHeads, pastKey.shape[3] == headSize,
                      pastValue.shape == [batch, kvHeads, pastKey.shape[2], valueHeadSize] else {
                    throw KernelError("past_key / past_value must be [\(batch), \(kvHeads), past, \(headSize)] and [.., \(valueHeadSize)], "
                                      + "got \(pastKey.shape) and \(pastValue.shape)")
                }
                pastLength = pastKey.shape[2]
            } else {
                pastLength = 0
            }
            let total = pastLength + newLength
            var keyLimits: [Int]? = nil
            if let nonpad = inputs.optional(6) {
                let lengths = try nonpad.intValues("nonpad_kv_seqlen")
                guard nonpad.shape == [batch], lengths.allSatisfy({ $0 >= 0 && $0 <= total }) else {
                    throw KernelError("nonpad_kv_seqlen must be [\(batch)] values in 0...\(total), got \(nonpad.shape) \(lengths)")
                }
                guard pastKey == nil else { throw KernelError("nonpad_kv_seqlen cannot be used with past_key / past_value") }
                keyLimits = lengths
            }
            self.q = q
            k = HeadLayout.concatenate(past: pastKey?.floats ?? [], newKeys, batch: batch, heads: kvHeads, pastLength: pastLength,
                                       newLength: newLength, size: headSize)
            v = HeadLayout.concatenate(past: pastValue?.floats ?? [], newValues, batch: batch, heads: kvHeads,
                                       pastLength: pastLength, newLength: newLength, size: valueHeadSize)
            let scoresShape = [batch, queryHeads, sequence, total]
            var terms: [ScaledDotProductAttention.AdditiveTerm] = []
            if let mask = inputs.optional(3) {
                let additive: [Float]
                switch mask.storage {
                case .bool(let keep): additive = keep.map { $0 ? 0 : -.infinity }
                case .float(let values): additive = values
                case .int64, .bytes: throw KernelError("attn_mask must be bool or floating-point, got \(mask.dataType)")
                }
                // The spec lets a mask with nonpad_kv_seqlen be narrower than T; onnxruntime 1.32 refuses that, and so
                // does this.
                guard mask.shape.last == total else {
                    throw KernelError("attn_mask \(mask.shape) must end in total_sequence_length \(total) (past \(pastLength) + kv \(newLength))")
                }
                terms.append(try .init(values: additive, shape: mask.shape, to: scoresShape))
            }
            problem = ScaledDotProductAttention(
                batch: batch, queryHeads: queryHeads, kvHeads: kvHeads, sequence: sequence, total: total, headSize: headSize,
                valueHeadSize: valueHeadSize, scale: op.scale ?? 1 / Float(headSize).squareRoot(), softcap: op.softcap,
                causalOffsets: !op.isCausal ? nil : keyLimits.map { $0.map { $0 - sequence } }
                    ?? [Int](repeating: pastLength, count: batch),
                keyLimits: keyLimits, terms: terms)
        }
    }
}
