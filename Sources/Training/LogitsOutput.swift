import ONNXGraph

/// Which graph output holds a causal LM's next-token logits `[batch, sequence, vocabulary]`, found from the graph
/// rather than assumed to be called `logits` (exporters and users rename it: `lm_logits`, `output`, `logits_0`).
public enum LogitsOutput {
    /// The output named `name` when given (it must exist and be a floating-point tensor); otherwise the one
    /// floating-point output of rank 3 with the vocabulary axis last: `logits` when several qualify, else the one
    /// with the widest fixed last axis. Outputs of another rank (a KV cache's `present.N.key` `[B, heads, T, d]`,
    /// hidden states of rank 2) are never taken. Throws naming every output when none or no single one fits.
    public static func find(in model: Model, named name: String? = nil) throws(TrainingError) -> String {
        let outputs = model.graph.outputs
        let listing = outputs.map { "\($0.name) \($0.typeDescription)" }.joined(separator: ", ")
        let floating: Set<DataType> = [.float, .float16, .bfloat16, .double]
        if let name {
            guard let output = outputs.first(where: { $0.name == name }) else {
                throw .invalidOption(option: "logitsOutput", reason: "'\(name)' is not an output of the model; its outputs are \(listing)")
            }
            guard output.isTensor, floating.contains(output.elementType) || output.elementType == .undefined else {
                throw .invalidOption(option: "logitsOutput", reason: "'\(name)' is \(output.typeDescription), not a floating-point tensor")
            }
            return name
        }
        let candidates = outputs.filter { output in
            output.isTensor && (floating.contains(output.elementType) || output.elementType == .undefined)
                && (output.shape.map { $0.count == 3 } ?? true)
        }
        if candidates.count == 1 { return candidates[0].name }
        if let named = candidates.first(where: { $0.name == "logits" }) { return named.name }
        func vocabulary(_ output: ValueInfo) -> Int? {
            if case .fixed(let size)? = output.shape?.last { return size }
            return nil
        }
        let widest = candidates.compactMap { output in vocabulary(output).map { (output.name, $0) } }.sorted { $0.1 > $1.1 }
        if let first = widest.first, widest.dropFirst().first?.1 != first.1 { return first.0 }
        throw .invalidModel(path: model.path, reason: candidates.isEmpty
            ? "no output looks like next-token logits (a floating-point [batch, sequence, vocabulary] tensor); its outputs are \(listing)"
            : "several outputs could be the logits (\(candidates.map(\.name).joined(separator: ", "))); name one with logitsOutput")
    }

    /// The vocabulary size the logits output declares, when fixed.
    public static func vocabularySize(of output: String, in model: Model) -> Int? {
        if case .fixed(let size)? = model.graph.outputs.first(where: { $0.name == output })?.shape?.last { return size }
        return nil
    }
}
