import Foundation
import ONNXGraph

/// The attention both `com.microsoft.MultiHeadAttention` and ONNX `Attention` (23, 24) compute once their inputs are
/// laid out per head, with its vector-Jacobian product. Each op turns its inputs (layouts, bias, masks, KV cache) into
/// this problem and maps the gradients back; `GroupQueryAttention` keeps its own kernel (rotary, per-row lengths).
///
/// Letters: B batch, Nq query heads, Nkv key/value heads (Nq a multiple of Nkv; query head h reads kv head
/// `h / (Nq/Nkv)`), S queries, T keys (past and new), H the query/key head size, Hv the value head size.
///
/// Inputs `q [B, Nq, S, H]`, `k [B, Nkv, T, H]`, `v [B, Nkv, T, Hv]`. Per query row (b, h, s) and key j:
///
///     raw_j    = scale · q·k_j
///     capped_j = softcap · tanh(raw_j / softcap)      (softcap > 0; else raw_j)
///     z_j      = capped_j + Σ additive terms[b, h, s, j]
///     p        = softmax(z over the keys j < keyLimit[b] and, when causal, j ≤ causalOffset[b] + s)
///     out      = Σ_j p_j v_j
///
/// Keys past the causal frontier take no part (onnxruntime adds the float type's lowest value there, which gives
/// the same zero probability). A row whose every score is −∞ (fully masked by a bool mask or a −∞ float) has p = 0
/// and a zero output: ONNX Attention's rule since onnx 1.23, and NaN-safe for the gradient.
///
/// Backward, per row (dQK is the gradient of the optional scores output, added at the stage it reports):
///
///     dP_j      = dO·v_j                      (+ dQK_j, mode softmax)
///     dZ_j      = p_j (dP_j − Σ_i p_i dP_i)   (+ dQK_j, mode masked scores); the additive terms' gradient
///     dCapped_j = dZ_j                        (+ dQK_j, mode capped)
///     dRaw_j    = dCapped_j (1 − tanh²(raw_j / softcap))  (+ dQK_j, mode raw)
///     dq = scale · Σ_j dRaw_j k_j,  dk_j += scale · dRaw_j q,  dv_j += p_j dO
///
/// where p_j = 0 gives exactly zero (no 0·∞).
struct ScaledDotProductAttention {
    /// What the optional scores output holds `[B, Nq, S, T]` (ONNX Attention's `qk_matmul_output_mode`; MultiHeadAttention's
    /// `qk` output is `.masked`).
    enum ScoresOutput: Int { case raw = 0, capped = 1, masked = 2, softmax = 3 }

    /// One additive term of the scores, broadcast to `[B, Nq, S, T]` through `strides` (0 along broadcast axes).
    struct AdditiveTerm {
        let values: [Float]
        let strides: [Int]

        /// `values` of `shape`, broadcast numpy-style to `[B, Nq, S, T]`.
        init(values: [Float], shape: [Int], to target: [Int]) throws(KernelError) {
            guard shape.count <= 4 else { throw KernelError("a mask of shape \(shape) has more than 4 axes") }
            let padded = [Int](repeating: 1, count: 4 - shape.count) + shape
            let own = contiguousStrides(padded)
            var strides: [Int] = []
            for axis in 0..<4 {
                guard padded[axis] == target[axis] || padded[axis] == 1 else {
                    throw KernelError("shape \(shape) does not broadcast to [batch, heads, sequence, total] = \(target)")
                }
                strides.append(padded[axis] == 1 ? 0 : own[axis])
            }
            self.values = values
            self.strides = strides
        }

        /// Per-(b, h, s) row offset; the key axis has stride `strides[3]`.
        @inline(__always) func rowOffset(_ b: Int, _ h: Int, _ s: Int) -> Int { b * strides[0] + h * strides[1] + s * strides[2] }
    }

    let batch: Int, queryHeads: Int, kvHeads: Int, sequence: Int, total: Int, headSize: Int, valueHeadSize: Int
    let scale: Float, softcap: Float
    /// Per sequence: query row s sees keys `0...causalOffset[b] + s` when set (none when that is negative).
    let causalOffsets: [Int]?
    /// Per sequence: the keys from this one on take no part (ONNX Attention-24's `nonpad_kv_seqlen`); nil for all T.
    var keyLimits: [Int]? = nil
    let terms: [AdditiveTerm]
    var groupSize: Int { queryHeads / kvHeads }
    var scoresShape: [Int] { [batch, queryHeads, sequence, total] }

    /// The keys query row s of sequence b may attend to (before masks): `0..<visible(b, s)`.
    @inline(__always) func visible(_ b: Int, _ s: Int) -> Int {
        var limit = keyLimits.map { min(total, $0[b]) } ?? total
        if let causalOffsets { limit = min(limit, causalOffsets[b] + s + 1) }
        return max(0, limit)
    }

    /// Scores of row (b, h, s): raw, capped (tanh(raw/softcap) kept for the derivative) and z, and p. Keys past the
    /// frontier get z = −∞ and p = 0.
    private func row(_ q: UnsafePointer<Float>, _ keys: UnsafePointer<Float>, _ b: Int, _ h: Int, _ s: Int,
                     raw: inout [Float], tanh t: inout [Float], z: inout [Float], p: inout [Float]) {
        let limit = visible(b, s)
        for j in 0..<total { raw[j] = scale * vectorDot(q, keys + j * headSize, headSize) }
        for j in 0..<total {
            var value = raw[j]
            if softcap > 0 {
                t[j] = Foundation.tanh(value / softcap)
                value = softcap * t[j]
            }
            if j >= limit {
                z[j] = -.infinity
                continue
            }
            for term in terms { value += term.values[term.rowOffset(b, h, s) + j * term.strides[3]] }
            z[j] = value
        }
        var maximum = -Float.infinity
        for j in 0..<limit where z[j] > maximum { maximum = z[j] }
        guard maximum > -.infinity else {
            for j in 0..<total { p[j] = 0 }
            return
        }
        var sum: Float = 0
        for j in 0..<total {
            p[j] = j < limit && z[j] > -.infinity ? Foundation.exp(z[j] - maximum) : 0
            sum += p[j]
        }
        for j in 0..<limit { p[j] /= sum }
    }

    /// `out [B, Nq, S, Hv]` and, when `scores` is set, that stage of the scores `[B, Nq, S, T]` (keys past the causal
    /// frontier hold the float type's lowest value in the masked stage, as onnxruntime writes them).
    func forward(q: [Float], k: [Float], v: [Float], scores: ScoresOutput?) -> (output: [Float], scores: [Float]?) {
        let (H, Hv, T, S) = (headSize, valueHeadSize, total, sequence)
        var output = [Float](repeating: 0, count: batch * queryHeads * S * Hv)
        var scoresValues = [Float](repeating: 0, count: scores == nil ? 0 : batch * queryHeads * S * T)
        // No query row, or no key: every row attends to nothing (zero), and there is no buffer to point into.
        guard !output.isEmpty, T > 0, H > 0 else { return (output, scores == nil ? nil : scoresValues) }
        q.withUnsafeBufferPointer { q in
            k.withUnsafeBufferPointer { k in
                v.withUnsafeBufferPointer { v in
                    output.withUnsafeMutableBufferPointer { output in
                        scoresValues.withUnsafeMutableBufferPointer { scoresOut in
                            let output = UncheckedSendable(output.baseAddress!), scoresOut = UncheckedSendable(scores == nil ? nil : scoresOut.baseAddress)
                            Parallel.forEachChunk(batch * queryHeads, minimumPerThread: 1) { range in
                                var raw = [Float](repeating: 0, count: T), t = raw, z = raw, p = raw
                                for bh in range {
                                    let (b, h) = (bh / queryHeads, bh % queryHeads), g = h / groupSize
                                    let keys = k.baseAddress! + (b * kvHeads + g) * T * H
                                    let values = v.baseAddress! + (b * kvHeads + g) * T * Hv
                                    for s in 0..<S {
                                        row(q.baseAddress! + (bh * S + s) * H, keys, b, h, s, raw: &raw, tanh: &t, z: &z, p: &p)
                                        let out = output.value + (bh * S + s) * Hv
                                        for j in 0..<T where p[j] != 0 {
                                            let vj = values + j * Hv
                                            for d in 0..<Hv { out[d] += p[j] * vj[d] }
                                        }
                                        guard let mode = scores, let scoresOut = scoresOut.value else { continue }
                                        let target = scoresOut + (bh * S + s) * T
                                        for j in 0..<T {
                                            switch mode {
                                            case .raw: target[j] = raw[j]
                                            case .capped: target[j] = softcap > 0 ? softcap * t[j] : raw[j]
                                            case .masked: target[j] = z[j] == -.infinity && j >= visible(b, s) ? -.greatestFiniteMagnitude : z[j]
                                            case .softmax: target[j] = p[j]
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
        return (output, scores == nil ? nil : scoresValues)
    }

    struct Gradients {
        var q: [Float], k: [Float], v: [Float]
        /// dZ `[B, Nq, S, T]`, the gradient of every additive term before its broadcast is summed; empty unless asked.
        var scores: [Float]
    }

    /// The backward pass (see the type's comment). `dScores` is the gradient of the scores output at stage `mode`.
    func backward(q: [Float], k: [Float], v: [Float], dOutput: [Float], dScores: [Float]?, mode: ScoresOutput?,
                  wantTerms: Bool) -> Gradients {
        let (H, Hv, T, S) = (headSize, valueHeadSize, total, sequence)
        var gradients = Gradients(q: [Float](repeating: 0, count: q.count), k: [Float](repeating: 0, count: k.count),
                                  v: [Float](repeating: 0, count: v.count),
                                  scores: [Float](repeating: 0, count: wantTerms ? batch * queryHeads * S * T : 0))
        guard !gradients.q.isEmpty, !gradients.k.isEmpty, !gradients.v.isEmpty, !dOutput.isEmpty else { return gradients }
        let extraMode = dScores == nil ? nil : mode
        let dScores = dScores ?? []
        dScores.withUnsafeBufferPointer { dScores in
        q.withUnsafeBufferPointer { q in
            k.withUnsafeBufferPointer { k in
                v.withUnsafeBufferPointer { v in
                    dOutput.withUnsafeBufferPointer { dOutput in
                        gradients.q.withUnsafeMutableBufferPointer { dQ in
                            gradients.k.withUnsafeMutableBufferPointer { dK in
                                gradients.v.withUnsafeMutableBufferPointer { dV in
                                    gradients.scores.withUnsafeMutableBufferPointer { dTerms in
                                        let dQ = UncheckedSendable(dQ.baseAddress!), dK = UncheckedSendable(dK.baseAddress!)
                                        let dV = UncheckedSendable(dV.baseAddress!), dTerms = UncheckedSendable(wantTerms ? dTerms.baseAddress : nil)
                                        // Parallel over (b, kv head): the query heads of a group write the same dK, dV rows.
                                        Parallel.forEachChunk(batch * kvHeads, minimumPerThread: 1) { range in
                                            var raw = [Float](repeating: 0, count: T), t = raw, z = raw, p = raw, dP = raw
                                            for bg in range {
                                                let (b, g) = (bg / kvHeads, bg % kvHeads)
                                                let keys = k.baseAddress! + bg * T * H, values = v.baseAddress! + bg * T * Hv
                                                let dKeys = dK.value + bg * T * H, dValues = dV.value + bg * T * Hv
                                                for h in g * groupSize..<(g + 1) * groupSize {
                                                    let bh = b * queryHeads + h
                                                    for s in 0..<S {
                                                        let qRow = q.baseAddress! + (bh * S + s) * H
                                                        row(qRow, keys, b, h, s, raw: &raw, tanh: &t, z: &z, p: &p)
                                                        let dO = dOutput.baseAddress! + (bh * S + s) * Hv
                                                        let dQK = extraMode == nil ? nil : dScores.baseAddress! + (bh * S + s) * T
                                                        var weighted: Float = 0
                                                        for j in 0..<T {
                                                            dP[j] = p[j] == 0 ? 0 : vectorDot(dO, values + j * Hv, Hv)
                                                            if extraMode == .softmax, let dQK { dP[j] += dQK[j] }
                                                            weighted += p[j] == 0 ? 0 : p[j] * dP[j]
                                                            if p[j] != 0 {
                                                                let dVj = dValues + j * Hv
                                                                for d in 0..<Hv { dVj[d] += p[j] * dO[d] }
                                                            }
                                                        }
                                                        let dRow = dQ.value + (bh * S + s) * H
                                                        for j in 0..<T {
                                                            var dZ: Float = p[j] == 0 ? 0 : p[j] * (dP[j] - weighted)
                                                            if extraMode == .masked, let dQK, z[j] > -.infinity { dZ += dQK[j] }
                                                            if let terms = dTerms.value { terms[(bh * S + s) * T + j] = dZ }
                                                            var dRaw = dZ
                                                            if extraMode == .capped, let dQK { dRaw += dQK[j] }
                                                            if softcap > 0 { dRaw *= 1 - t[j] * t[j] }
                                                            if extraMode == .raw, let dQK { dRaw += dQK[j] }
                                                            if dRaw == 0 { continue }
                                                            let scaled = scale * dRaw
                                                            let kj = keys + j * H, dKj = dKeys + j * H
                                                            for d in 0..<H {
                                                                dRow[d] += scaled * kj[d]
                                                                dKj[d] += scaled * qRow[d]
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
        }
        }
        return gradients
    }
}

/// `[B, S, N·D]` (tokens, heads side by side) to `[B, N, S, D]`, adding `bias[n·D + d]` when given; and back.
enum HeadLayout {
    static func split(_ x: [Float], batch: Int, sequence: Int, heads: Int, size: Int, bias: ArraySlice<Float>? = nil) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        for b in 0..<batch {
            for s in 0..<sequence {
                for n in 0..<heads {
                    let from = ((b * sequence + s) * heads + n) * size, to = ((b * heads + n) * sequence + s) * size
                    for d in 0..<size { y[to + d] = x[from + d] }
                    if let bias {
                        let base = bias.startIndex + n * size
                        for d in 0..<size { y[to + d] += bias[base + d] }
                    }
                }
            }
        }
        return y
    }

    static func merge(_ y: [Float], batch: Int, sequence: Int, heads: Int, size: Int) -> [Float] {
        var x = [Float](repeating: 0, count: y.count)
        for b in 0..<batch {
            for s in 0..<sequence {
                for n in 0..<heads {
                    let to = ((b * sequence + s) * heads + n) * size, from = ((b * heads + n) * sequence + s) * size
                    for d in 0..<size { x[to + d] = y[from + d] }
                }
            }
        }
        return x
    }

    /// Past rows `[B, N, P, D]` then new rows `[B, N, L, D]`, per head: `[B, N, P + L, D]`.
    static func concatenate(past: [Float], _ new: [Float], batch: Int, heads: Int, pastLength: Int, newLength: Int, size: Int) -> [Float] {
        if pastLength == 0 { return new }
        var y = [Float](repeating: 0, count: batch * heads * (pastLength + newLength) * size)
        for bn in 0..<batch * heads {
            let to = bn * (pastLength + newLength) * size
            for i in 0..<pastLength * size { y[to + i] = past[bn * pastLength * size + i] }
            for i in 0..<newLength * size { y[to + pastLength * size + i] = new[bn * newLength * size + i] }
        }
        return y
    }

    /// The inverse of `concatenate` for gradients: the past rows and the new rows.
    static func separate(_ y: [Float], batch: Int, heads: Int, pastLength: Int, newLength: Int, size: Int) -> (past: [Float], new: [Float]) {
        if pastLength == 0 { return ([], y) }
        var past = [Float](repeating: 0, count: batch * heads * pastLength * size)
        var new = [Float](repeating: 0, count: batch * heads * newLength * size)
        for bn in 0..<batch * heads {
            let from = bn * (pastLength + newLength) * size
            for i in 0..<pastLength * size { past[bn * pastLength * size + i] = y[from + i] }
            for i in 0..<newLength * size { new[bn * newLength * size + i] = y[from + pastLength * size + i] }
        }
        return (past, new)
    }

    /// Σ over batch and tokens of a `[B, N, S, D]` gradient: the gradient of a bias `[N·D]` added to every token.
    static func biasGradient(_ y: [Float], batch: Int, sequence: Int, heads: Int, size: Int) -> [Float] {
        var sums = [Float](repeating: 0, count: heads * size)
        for b in 0..<batch {
            for n in 0..<heads {
                for s in 0..<sequence {
                    let from = ((b * heads + n) * sequence + s) * size
                    for d in 0..<size { sums[n * size + d] += y[from + d] }
                }
            }
        }
        return sums
    }
}
