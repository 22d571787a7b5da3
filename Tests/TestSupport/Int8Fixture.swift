import Foundation
import ONNXGraph

/// The onnx-community-style int8 fixture (`tools/make_int8_fixtures.py`, fixtures/int8): the tiny Llama of
/// fixtures/models/llama-torchscript, slimmed and quantised by onnxruntime's `quantize_dynamic` as transformers.js's
/// `scripts/quantize.py` does for `model_int8`.
public enum Int8Fixture {
    public static let folder = repositoryPath("fixtures/int8/llama-int8")
    /// The source model's tokenizer (the quantised file is the same model; its tokenizer is not copied).
    public static let tokenizerPath = repositoryPath("fixtures/models/llama-torchscript/tokenizer.json")

    public static func model() throws -> Model { try Model.load(path: "\(folder)/model.onnx") }
    /// `input_ids` and `attention_mask` `[2, 12]`, right padded.
    public static func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }

    /// The int8/uint8 values of a quantised tensor (the one place the tests read that storage).
    public static func quantizedValues(_ tensor: Tensor) -> [Int64] { tensor.int64s }

    /// `model` with every dynamically quantised MatMul (`DynamicQuantizedMatMul`) replaced by a float MatMul of its
    /// input by the dequantised weight `(W_q − zp) · scale`, computed here from the initializers with plain loops,
    /// and the quantising nodes dropped; with the weights to pass as a session's `additionalInitializers`.
    public static func dequantized(_ model: Model) throws -> (Model, [String: Tensor]) {
        var nodes = model.graph.nodes
        let initializers = Dictionary(model.graph.initializers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        func load(_ name: String) throws -> Tensor {
            guard let initializer = initializers[name] else {
                throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "no initializer \(name)"])
            }
            return try model.loadTensor(initializer)
        }
        var weights: [String: Tensor] = [:]
        var dropped = Set<Int>()
        for projection in DynamicQuantizedMatMul.find(in: nodes) {
            let q = try load(projection.weight)
            let scale = try load(projection.weightScale).floats
            let zero = projection.weightZeroPoint.isEmpty ? [0] : quantizedValues(try load(projection.weightZeroPoint))
            let values = quantizedValues(q), (k, n) = (q.shape[0], q.shape[1])
            var w = [Float](repeating: 0, count: k * n)
            for index in w.indices {
                let column = index % n
                w[index] = Float(values[index] - zero[zero.count == 1 ? 0 : column]) * scale[scale.count == 1 ? 0 : column]
            }
            let name = "dequantized/\(projection.weight)"
            weights[name] = Tensor(shape: [k, n], floats: w)
            let output = nodes[projection.outputNode]
            nodes[projection.outputNode] = Node(name: output.name, opType: "MatMul", inputs: [projection.input, name],
                                                outputs: output.outputs, index: output.index)
            dropped.formUnion(projection.nodes.dropLast())
        }
        var rewritten = model
        rewritten.graph.nodes = nodes.enumerated().filter { !dropped.contains($0.offset) }.map(\.element)
        for index in rewritten.graph.nodes.indices { rewritten.graph.nodes[index].index = index }
        return (rewritten, weights)
    }
}
