import Adapters
import Interpreter
import ONNXGraph

extension Session {
    /// A session on the model at `modelPath`, with the adapter folder at `adapterPath` (PEFT or MLX), if any,
    /// applied unmerged: LoRA nodes beside the base weights, which stay as the file has them. Dropout is off
    /// (inference: no masks to feed).
    public static func open(modelPath: String, adapterPath: String? = nil) throws -> Session {
        let (model, adapter) = try Model.load(path: modelPath, adapterPath: adapterPath)
        guard var adapter else { return try Session(model: model) }
        adapter.configuration.dropout = 0
        let adapted = try AdaptedModel(model: model, adapter: adapter)
        return try Session(model: adapted.model, additionalInitializers: adapted.initializers)
    }
}

extension NPZRunner {
    /// `onnx-dpo run`: runs the model at `modelPath`, with the adapter folder at `adapterPath` applied unmerged
    /// when given (`Session.open(modelPath:adapterPath:)`), on the arrays in `inputsPath`, and writes every graph
    /// output to `outputPath`. The weights are packed once (`Session.packWeights`), as without an adapter. Returns
    /// the outputs written, in graph order.
    @discardableResult
    public static func run(modelPath: String, adapterPath: String?, inputsPath: String,
                           outputPath: String) throws -> [(name: String, tensor: Tensor)] {
        let session = try Session.open(modelPath: modelPath, adapterPath: adapterPath)
        try session.packWeights()
        return try run(session: session, inputsPath: inputsPath, outputPath: outputPath)
    }
}
