import ONNXGraph

/// `onnx-dpo run`: a model on the arrays of an `.npz`, every graph output written to another `.npz`.
public enum NPZRunner {
    /// Runs the model at `modelPath` on the arrays in `inputsPath` (keyed by graph input name) and writes every
    /// graph output, under its name, to `outputPath`. Returns the outputs written, in graph order.
    @discardableResult
    public static func run(modelPath: String, inputsPath: String, outputPath: String) throws -> [(name: String, tensor: Tensor)] {
        let session = try Session(model: try Model.load(path: modelPath))
        try session.packWeights()
        return try run(session: session, inputsPath: inputsPath, outputPath: outputPath)
    }

    /// Runs `session` (a model already loaded, possibly rewritten, such as one with an adapter attached) on the
    /// arrays in `inputsPath` and writes every graph output to `outputPath`. KV-cache inputs the file does not hold
    /// are fed empty (`KVCacheInputs`), so a decoder with past runs on `input_ids` and `attention_mask` alone.
    @discardableResult
    public static func run(session: Session, inputsPath: String, outputPath: String) throws -> [(name: String, tensor: Tensor)] {
        var feeds = try NPZ.read(path: inputsPath)
        if let batch = feeds["input_ids"]?.shape.first {
            feeds.merge(try KVCacheInputs(model: session.model).emptyFeeds(batch: batch)) { given, _ in given }
        }
        if let mask = feeds["attention_mask"] { try KVCacheInputs.checkRightPadded(mask, model: session.model) }
        let results = try session.run(feeds)
        let ordered = session.outputs.map { ($0.name, results[$0.name]!) }
        try NPZ.write(ordered, path: outputPath)
        return ordered
    }
}
