import ONNXGraph

/// One projection of an ONNX graph that a LoRA adapter can be attached to, found by the graph's structure
/// (`LoRATargets.find`), with the Hugging Face module path it corresponds to (for PEFT key names).
///
/// Orientation: ONNX stores a MatMul weight as `[in, out]` (`y = x·W`); PEFT's `A` is `[r, in]` and `B` is
/// `[out, r]`, so a merged delta is `scale · (B·A)ᵀ` in a MatMul weight and `scale · B·A` in a Gemm weight with
/// `transB = 1`. `peftWeight(from:)` gives the adapted part of a weight in PEFT's `[out, in]` orientation.
public struct LoRATarget: Sendable, Equatable, Codable {
    /// What the projection computes inside its transformer block, decided by structure, not by name.
    public enum Kind: String, Sendable, Equatable, Codable, CaseIterable {
        /// Queries: the left operand of the `Q·Kᵀ` MatMul that feeds the attention Softmax.
        case q
        /// Keys: the right operand of `Q·Kᵀ`.
        case k
        /// Values: the right operand of the `probs·V` MatMul after the Softmax.
        case v
        /// The attention output projection: the first linear layer reading `probs·V`.
        case o
        /// Any other linear layer inside the span of a transformer block (the MLP's up, gate and down
        /// projections).
        case mlp
        /// A linear layer outside every block, such as the output head (`lm_head`).
        case other
    }

    /// How the projection's weight is stored and which of its output features the target covers.
    public enum Layout: Sendable, Equatable, Codable {
        /// `MatMul(x, W)` on an initializer `W: [in, out]`; every output feature.
        case matMul
        /// `Gemm(x, W)` on an initializer `W`, `[in, out]` when `transB` is false and `[out, in]` when true;
        /// every output feature.
        case gemm(transB: Bool)
        /// Part of a fused projection (GPT-2's `c_attn`, Phi-3's `qkv_proj`, GPT-NeoX's `query_key_value`):
        /// `storage` is how the fused weight is stored (`.matMul` or `.gemm`), and `columns` are the fused
        /// output features that belong to this target, as ranges of the output axis (the columns of the
        /// `[in, out]` orientation, the rows of `[out, in]`), in ascending order, which is the order of the
        /// target's features: one range for GPT-2 and Phi-3, one per head for GPT-NeoX. Only these output
        /// features may change.
        indirect case fused(storage: Layout, columns: [Swift.Range<Int>])
        /// `com.microsoft.MatMulNBits(x, B, scales, ...)`: a frozen block-quantised weight, stored as uint8 blocks
        /// `[out, ⌈in / blockSize⌉, blockSize · bits / 8]` and dequantised to `[out, in]`; every output feature.
        /// The adapter trains in fp32 beside it, and the weight never gets a gradient.
        case matMulNBits(bits: Int, blockSize: Int)
        /// onnxruntime's dynamically quantised MatMul (`DynamicQuantizeLinear → MatMulInteger → Cast → Mul`, or its
        /// fused `MatMulIntegerToFloat` / `DynamicQuantizeMatMul` forms; onnx-community `model_int8`): a frozen
        /// int8/uint8 weight `[in, out]` with a per-tensor or per-column scale; every output feature. The adapter
        /// reads the float activation before the `DynamicQuantizeLinear` and adds to the float output; it trains in
        /// fp32 and the weight never gets a gradient.
        case matMulInteger

        /// How the weight is stored, fused or not (`.matMul` or `.gemm`).
        public var storage: Layout {
            if case .fused(let storage, _) = self { return storage.storage }
            return self
        }

        /// True when the stored weight is `[out, in]` (Gemm with `transB = 1`, and MatMulNBits once dequantised),
        /// false for `[in, out]`.
        public var isWeightOutByIn: Bool {
            if case .matMulNBits = storage { return true }
            return storage == .gemm(transB: true)
        }

        /// True for a quantised weight (MatMulNBits, or a dynamically quantised MatMul).
        public var isQuantized: Bool {
            switch storage {
            case .matMulNBits, .matMulInteger: return true
            default: return false
            }
        }

        /// The output features of a weight with `outFeatures` outputs that this layout covers, in order.
        public func columns(outOf outFeatures: Int) -> [Int] {
            if case .fused(_, let ranges) = self { return ranges.flatMap { Array($0) } }
            return Array(0..<outFeatures)
        }
    }

    /// The Hugging Face module path (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`), taken
    /// from the node's name or its `pkg.torch.onnx.name_scopes` metadata; or, when the graph names nothing, a
    /// structural label such as `layers.0.attention.q` (`layers.0.attention.qkv` for a fused projection).
    public var modulePath: String
    public var kind: Kind
    /// The name of the MatMul or Gemm node that applies the weight (`MatMul node #12` when the node is
    /// unnamed, which ONNX allows but no exporter measured does).
    public var node: String
    /// The initializer that node reads as its weight (the copy it actually reads when an exporter duplicated a
    /// tied weight).
    public var weight: String
    /// The bias the projection adds (the Gemm's `C`, or a 1-D initializer in the `Add` right after the
    /// MatMul), nil when there is none. For a fused projection it spans every fused output.
    public var bias: String?
    /// Index of the attention block, in graph order (for `.other`, the nearest block before it, or 0).
    public var layer: Int
    /// Input features of the weight.
    public var inFeatures: Int
    /// Output features of the adapted part (for a fused projection, only this target's columns).
    public var outFeatures: Int
    public var layout: Layout

    public init(
        modulePath: String, kind: Kind, node: String, weight: String, bias: String? = nil, layer: Int,
        inFeatures: Int, outFeatures: Int, layout: Layout
    ) {
        self.modulePath = modulePath
        self.kind = kind
        self.node = node
        self.weight = weight
        self.bias = bias
        self.layer = layer
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.layout = layout
    }

    /// True when this target is part of a fused projection whose other output features stay frozen.
    public var isFused: Bool {
        if case .fused = layout { return true }
        return false
    }

    /// Output features of the whole stored weight (more than `outFeatures` for a fused projection), read from
    /// its shape; nil when `shape` is not this target's weight.
    public func storedOutFeatures(shape: [Int]) -> Int? {
        if case .matMulNBits(_, let blockSize) = layout.storage {
            // [out, blocks, bytes per block]: enough blocks for the input features.
            guard shape.count == 3, shape[1] * blockSize >= inFeatures else { return nil }
            return layout.columns(outOf: shape[0]).allSatisfy({ $0 < shape[0] }) ? shape[0] : nil
        }
        guard shape.count == 2 else { return nil }
        let (inputs, outputs) = layout.isWeightOutByIn ? (shape[1], shape[0]) : (shape[0], shape[1])
        guard inputs == inFeatures, layout.columns(outOf: outputs).allSatisfy({ $0 < outputs }) else { return nil }
        return outputs
    }

    /// The adapted part of `weight` (this target's stored weight) in PEFT's orientation `[outFeatures,
    /// inFeatures]`: the whole weight, transposed from `[in, out]` where needed, or, for a fused projection,
    /// only this target's output features. Nil when `weight` does not have this target's shape.
    public func peftWeight(from weight: Tensor) -> Tensor? {
        guard weight.storage.kind == .float, let outputs = storedOutFeatures(shape: weight.shape) else { return nil }
        let columns = layout.columns(outOf: outputs)
        guard columns.count == outFeatures else { return nil }
        let values = weight.floats
        var result = [Float](repeating: 0, count: outFeatures * inFeatures)
        for (row, column) in columns.enumerated() {
            for input in 0..<inFeatures {
                // [in, out] reads W[input, column]; [out, in] reads W[column, input].
                let index = layout.isWeightOutByIn ? column * inFeatures + input : input * outputs + column
                result[row * inFeatures + input] = values[index]
            }
        }
        return Tensor(shape: [outFeatures, inFeatures], floats: result, dataType: weight.dataType)
    }
}

extension LoRATarget: CustomStringConvertible {
    /// `layer 0 q model.layers.0.self_attn.q_proj: MatMul 'node' on 'weight' [64 -> 64]`, for `inspect`.
    public var description: String {
        var text = "layer \(layer) \(kind.rawValue) \(modulePath): '\(node)' on '\(weight)' [\(inFeatures) -> \(outFeatures)]"
        switch layout {
        case .matMul: text += " MatMul [in, out]"
        case .gemm(let transB): text += transB ? " Gemm [out, in]" : " Gemm [in, out]"
        case .matMulNBits(let bits, let blockSize): text += " MatMulNBits \(bits)-bit, block \(blockSize) [out, in]"
        case .matMulInteger: text += " dynamically quantised MatMulInteger [in, out]"
        case .fused(let storage, let columns):
            var stored = storage.isWeightOutByIn ? "[out, in]" : "[in, out]"
            if case .matMulNBits(let bits, let blockSize) = storage { stored = "MatMulNBits \(bits)-bit, block \(blockSize) [out, in]" }
            let ranges = columns.map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")
            text += " fused \(stored), output features \(ranges)"
        }
        if let bias { text += ", bias '\(bias)'" }
        return text
    }
}
