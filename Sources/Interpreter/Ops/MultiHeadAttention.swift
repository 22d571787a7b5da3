import Foundation
import ONNXGraph

/// `com.microsoft.MultiHeadAttention` as onnxruntime's CPU kernel computes it (spec: onnxruntime
/// `docs/ContribOperators.md`; kernel `contrib_ops/cpu/bert/multihead_attention.cc`, `multihead_attention_helper.h`,
/// `attention_cpu_base.h`, `attention_helper.h`). onnxruntime's transformer optimizer fuses the attention of BERT-,
/// GPT-2- and T5-style graphs into it.
///
/// Letters: B batch, N heads, S query tokens, L new key/value tokens, P past tokens, T = P + L, D = N·H and
/// Dv = N·Hv the query/key and value widths.
///
/// Inputs: 0 query `[B, S, D]`; 1 key `[B, L, D]`, or `[B, N, L, H]` (keys already per head, e.g. cross-attention's
/// cache, no bias and no past then); 2 value `[B, L, Dv]` or `[B, N, L, Hv]`; 3 bias `[D + D + Dv]`, added to query,
/// key and value; 4 key_padding_mask int32 `[B]` (each row's key count: keys from it on are masked), `[3B + 2]` (the
/// CPU kernel reads only the first B values, as `[B]`), `[B, T]` (or `[B, L]` without a past), or `[B, S, T]`, 1 to
/// keep and 0 to mask; 5 attention_bias `[B or 1, N or 1, S, T]`; 6, 7 past_key / past_value `[B, N, P, H]`.
/// Outputs: output `[B, S, Dv]`, present_key / present_value `[B, N, T, H]` (past rows, then the new ones), qk
/// `[B, N, S, T]` (the scores before the softmax).
///
/// Per head: `z = scale · q·kᵀ + attention_bias + mask` (scale 0 means 1/√H; a masked key adds
/// `mask_filter_value`, default −10000, so a fully masked row still averages its values as onnxruntime's does;
/// with `unidirectional` = 1, query s sees the keys `[0, P + s]`), `output = softmax(z) · v`. The attention math and
/// its backward are `ScaledDotProductAttention`'s; here, the layouts, bias, masks and cache around it.
///
/// What the CPU kernel refuses is refused here too: packed QKV (`key` omitted, or `query [B, S, N, 3, H]`) and packed
/// KV (`key [B, L, N, 2, H]`); inputs 8 and 9 (past_sequence_length, cache_indirection: DecoderMaskedMultiHeadAttention's
/// shared-buffer beam search) are not implemented.
struct MultiHeadAttention: Operator {
    static let opType = "MultiHeadAttention"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let numHeads: Int
    let scale: Float
    let maskFilterValue: Float
    let unidirectional: Bool
    /// Whether the node names output 3 (qk).
    let wantsScores: Bool

    static let unsupportedInputs = [8: "past_sequence_length", 9: "cache_indirection"]

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        numHeads = try node.int("num_heads", default: 0)
        guard numHeads > 0 else { throw refuse("num_heads", "= \(numHeads): it is required and must be positive") }
        scale = try node.float("scale", default: 0)
        maskFilterValue = try node.float("mask_filter_value", default: -10_000)
        let unidirectional = try node.int("unidirectional", default: 0)
        guard unidirectional == 0 || unidirectional == 1 else {
            throw refuse("unidirectional", "= \(unidirectional); 0 and 1 are supported")
        }
        self.unidirectional = unidirectional == 1
        guard node.inputs.count > 2, !node.inputs[1].isEmpty, !node.inputs[2].isEmpty else {
            throw refuse("input 1 (key)", "is omitted: packed QKV in query is not supported (nor by onnxruntime's CPU "
                         + "kernel); only separate query, key and value are")
        }
        for (index, name) in Self.unsupportedInputs.sorted(by: { $0.key < $1.key })
        where index < node.inputs.count && !node.inputs[index].isEmpty {
            throw refuse("input \(index) (\(name))", "is not supported; only inputs 0-7 (query, key, value, bias, "
                         + "key_padding_mask, attention_bias, past_key, past_value) are")
        }
        wantsScores = node.outputs.count > 3 && !node.outputs[3].isEmpty
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let plan = try Plan(self, inputs)
        let (output, scores) = plan.problem.forward(q: plan.q, k: plan.k, v: plan.v, scores: wantsScores ? .masked : nil)
        let type = try inputs.required(0).dataType
        let p = plan.problem
        var results = [
            Tensor(shape: [p.batch, p.sequence, numHeads * p.valueHeadSize],
                   floats: roundedToPrecision(HeadLayout.merge(output, batch: p.batch, sequence: p.sequence, heads: numHeads,
                                                               size: p.valueHeadSize), type), dataType: type),
            Tensor(shape: [p.batch, numHeads, p.total, p.headSize], floats: plan.k, dataType: type),
            Tensor(shape: [p.batch, numHeads, p.total, p.valueHeadSize], floats: plan.v, dataType: type),
        ]
        if let scores { results.append(Tensor(shape: p.scoresShape, floats: scores, dataType: type)) }
        return results
    }
}

extension MultiHeadAttention: DifferentiableOperator {
    /// The rule recomputes the probabilities from the inputs; no output is kept.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: nil, outputs: []) }

    // dq, dk, dv from ScaledDotProductAttention; present gradients add to the k / v rows they copy (the past rows
    // go to past_key / past_value); dbias sums dq, dk, dv over batch and tokens; dattention_bias is dz summed over
    // its broadcast axes.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let plan = try Plan(self, context.inputs)
        let p = plan.problem
        func upstream(_ index: Int) -> [Float]? {
            index < context.outputGradients.count ? context.outputGradients[index]?.floats : nil
        }
        let dOutput = HeadLayout.split(context.outputGradient(0).floats, batch: p.batch, sequence: p.sequence,
                                       heads: numHeads, size: p.valueHeadSize)
        let g = p.backward(q: plan.q, k: plan.k, v: plan.v, dOutput: dOutput, dScores: upstream(3), mode: .masked,
                           wantTerms: context.wants(5))
        var dKeys = g.k, dValues = g.v
        if let dPresent = upstream(1) { for i in dKeys.indices { dKeys[i] += dPresent[i] } }
        if let dPresent = upstream(2) { for i in dValues.indices { dValues[i] += dPresent[i] } }
        let (dPastKey, dNewKey) = HeadLayout.separate(dKeys, batch: p.batch, heads: numHeads, pastLength: plan.pastLength,
                                                      newLength: plan.newLength, size: p.headSize)
        let (dPastValue, dNewValue) = HeadLayout.separate(dValues, batch: p.batch, heads: numHeads, pastLength: plan.pastLength,
                                                          newLength: plan.newLength, size: p.valueHeadSize)
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        func set(_ index: Int, _ values: @autoclosure () -> [Float]) throws {
            guard context.wants(index) else { return }
            result[index] = Tensor(shape: try context.inputShape(index), floats: values(), dataType: try context.inputType(index))
        }
        func merged(_ values: [Float], _ length: Int, _ size: Int) -> [Float] {
            plan.perHeadKeys ? values : HeadLayout.merge(values, batch: p.batch, sequence: length, heads: numHeads, size: size)
        }
        try set(0, HeadLayout.merge(g.q, batch: p.batch, sequence: p.sequence, heads: numHeads, size: p.headSize))
        try set(1, merged(dNewKey, plan.newLength, p.headSize))
        try set(2, merged(dNewValue, plan.newLength, p.valueHeadSize))
        try set(3, HeadLayout.biasGradient(g.q, batch: p.batch, sequence: p.sequence, heads: numHeads, size: p.headSize)
                + HeadLayout.biasGradient(dNewKey, batch: p.batch, sequence: plan.newLength, heads: numHeads, size: p.headSize)
                + HeadLayout.biasGradient(dNewValue, batch: p.batch, sequence: plan.newLength, heads: numHeads, size: p.valueHeadSize))
        if context.wants(5) {
            result[5] = try reduceGradient(Tensor(shape: p.scoresShape, floats: g.scores), to: context.inputShape(5))
        }
        try set(6, dPastKey)
        try set(7, dPastValue)
        return result
    }
}

extension MultiHeadAttention {
    /// One call's inputs checked against each other and laid out per head: q `[B, N, S, H]`, the present k
    /// `[B, N, T, H]` and v `[B, N, T, Hv]`, and the masks as additive terms.
    struct Plan {
        let problem: ScaledDotProductAttention
        let q: [Float], k: [Float], v: [Float]
        let pastLength: Int, newLength: Int
        /// Whether key and value came as `[B, N, L, H]`.
        let perHeadKeys: Bool

        init(_ op: MultiHeadAttention, _ inputs: [Tensor?]) throws(KernelError) {
            let N = op.numHeads
            let query = try inputs.required(0), key = try inputs.required(1), value = try inputs.required(2)
            guard query.rank == 3, case .float = query.storage else {
                throw KernelError("query must be a floating-point [batch, sequence, hidden] tensor, got \(query.dataType)\(query.shape)"
                                  + (query.rank == 5 ? " (packed QKV [B, S, N, 3, H] is not supported, as on onnxruntime's CPU)" : ""))
            }
            let (batch, sequence, width) = (query.shape[0], query.shape[1], query.shape[2])
            guard width % N == 0 else { throw KernelError("query width \(width) is not a multiple of num_heads \(N)") }
            let headSize = width / N
            guard case .float = key.storage, case .float = value.storage else {
                throw KernelError("key and value must be floating-point, got \(key.dataType) and \(value.dataType)")
            }
            let bias = inputs.optional(3)
            let pastKey = inputs.optional(6), pastValue = inputs.optional(7)
            guard (pastKey == nil) == (pastValue == nil) else { throw KernelError("past_key and past_value must be given together") }
            let valueHeadSize: Int
            switch (key.rank, value.rank) {
            case (3, 3):
                guard key.shape[0] == batch, key.shape[2] == width, value.shape[0] == batch, value.shape[1] == key.shape[1],
                      value.shape[2] % N == 0 else {
                    throw KernelError("key must be [\(batch), kv_sequence, \(width)] and value [\(batch), kv_sequence, N·Hv], got "
                                      + "\(key.shape) and \(value.shape)")
                }
                (newLength, valueHeadSize, perHeadKeys) = (key.shape[1], value.shape[2] / N, false)
            case (4, 4):
                guard key.shape[0] == batch, key.shape[1] == N, key.shape[3] == headSize, value.shape[0] == batch,
                      value.shape[1] == N, value.shape[2] == key.shape[2] else {
                    throw KernelError("key and value must be [\(batch), \(N), kv_sequence, head_size] with head_size \(headSize) "
                                      + "for key, got \(key.shape) and \(value.shape)")
                }
                guard bias == nil, pastKey == nil else {
                    throw KernelError("bias and past_key / past_value must be omitted when key and value are 4D [B, N, L, H]")
                }
                (newLength, valueHeadSize, perHeadKeys) = (key.shape[2], value.shape[3], true)
            default:
                throw KernelError("key \(key.shape) and value \(value.shape) must both be 3D [B, L, D] or both 4D [B, N, L, H]"
                                  + (key.rank == 5 ? " (packed KV [B, L, N, 2, H] is not supported, as on onnxruntime's CPU)" : ""))
            }
            if let pastKey, let pastValue {
                guard pastKey.rank == 4, pastKey.shape[0] == batch, pastKey.shape[1] == N, pastKey.shape[3] == headSize,
                      pastValue.shape == [batch, N, pastKey.shape[2], valueHeadSize] else {
                    throw KernelError("past_key / past_value must be [\(batch), \(N), past, \(headSize)] and [.., \(valueHeadSize)], "
                                      + "got \(pastKey.shape) and \(pastValue.shape)")
                }
                pastLength = pastKey.shape[2]
            } else {
                pastLength = 0
            }
            let total = pastLength + newLength
            var q = query.floats, newKeys = key.floats, newValues = value.floats
            if let bias {
                guard bias.shape == [2 * width + N * valueHeadSize] else {
                    throw KernelError("bias must be [\(2 * width + N * valueHeadSize)] (query, key and value widths), got \(bias.shape)")
                }
                let b = bias.floats
                q = HeadLayout.split(q, batch: batch, sequence: sequence, heads: N, size: headSize, bias: b[0..<width])
                newKeys = HeadLayout.split(newKeys, batch: batch, sequence: newLength, heads: N, size: headSize, bias: b[width..<2 * width])
                newValues = HeadLayout.split(newValues, batch: batch, sequence: newLength, heads: N, size: valueHeadSize,
                                             bias: b[(2 * width)...])
            } else {
                q = HeadLayout.split(q, batch: batch, sequence: sequence, heads: N, size: headSize)
                if !perHeadKeys {
                    newKeys = HeadLayout.split(newKeys, batch: batch, sequence: newLength, heads: N, size: headSize)
                    newValues = HeadLayout.split(newValues, batch: batch, sequence: newLength, heads: N, size: valueHeadSize)
                }
            }
            self.q = q
            k = HeadLayout.concatenate(past: pastKey?.floats ?? [], newKeys, batch: batch, heads: N, pastLength: pastLength,
                                       newLength: newLength, size: headSize)
            v = HeadLayout.concatenate(past: pastValue?.floats ?? [], newValues, batch: batch, heads: N, pastLength: pastLength,
                                       newLength: newLength, size: valueHeadSize)
            let scoresShape = [batch, N, sequence, total]
            var terms: [ScaledDotProductAttention.AdditiveTerm] = []
            if let mask = inputs.optional(4) {
                terms.append(try Self.paddingTerm(mask, batch: batch, sequence: sequence, newLength: newLength, total: total,
                                                  filter: op.maskFilterValue, scoresShape: scoresShape))
            }
            if let attentionBias = inputs.optional(5) {
                guard attentionBias.rank == 4, [batch, 1].contains(attentionBias.shape[0]), [N, 1].contains(attentionBias.shape[1]),
                      attentionBias.shape[2] == sequence, attentionBias.shape[3] == total, case .float = attentionBias.storage else {
                    throw KernelError("attention_bias must be floating-point [\(batch) or 1, \(N) or 1, \(sequence), \(total)], got "
                                      + "\(attentionBias.dataType)\(attentionBias.shape)")
                }
                terms.append(try .init(values: attentionBias.floats, shape: attentionBias.shape, to: scoresShape))
            }
            problem = ScaledDotProductAttention(
                batch: batch, queryHeads: N, kvHeads: N, sequence: sequence, total: total, headSize: headSize,
                valueHeadSize: valueHeadSize, scale: op.scale == 0 ? 1 / Float(headSize).squareRoot() : op.scale, softcap: 0,
                causalOffsets: op.unidirectional ? [Int](repeating: pastLength, count: batch) : nil, terms: terms)
        }

        /// key_padding_mask as `mask_filter_value` where a key is masked, 0 elsewhere, in one of the forms the CPU kernel
        /// reads (`attention_helper.h` PrepareMask).
        static func paddingTerm(_ mask: Tensor, batch: Int, sequence: Int, newLength: Int, total: Int, filter: Float,
                                scoresShape: [Int]) throws(KernelError) -> ScaledDotProductAttention.AdditiveTerm {
            let values = try mask.intValues("key_padding_mask")
            func masked(_ keep: Bool) -> Float { keep ? 0 : filter }
            switch mask.shape {
            case [batch], [3 * batch + 2]:
                // Each sequence's key count: keys from it on are masked (the CPU kernel ignores the start positions of
                // the [3B + 2] form).
                var additive = [Float](repeating: 0, count: batch * total)
                for b in 0..<batch { for j in 0..<total where j >= values[b] { additive[b * total + j] = filter } }
                return try .init(values: additive, shape: [batch, 1, 1, total], to: scoresShape)
            case [batch, total], [batch, sequence, total]:
                return try .init(values: values.map { masked($0 > 0) }, shape: mask.rank == 2 ? [batch, 1, 1, total] : [batch, 1, sequence, total],
                                 to: scoresShape)
            default:
                throw KernelError("key_padding_mask must be int32 [\(batch)], [\(3 * batch + 2)], [\(batch), \(total)] or "
                                  + "[\(batch), \(sequence), \(total)], got \(mask.shape)"
                                  + (mask.shape == [batch, newLength] ? " ([batch, kv_sequence] needs no past)" : ""))
            }
        }
    }
}
