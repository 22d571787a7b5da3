import ONNXGraph

/// ONNX `RMSNormalization` (opset 23, https://onnx.ai/onnx/operators/onnx__RMSNormalization.html):
/// `Y = X / √(mean(X², axes axis...) + epsilon) · scale`, attributes `axis` (−1), `epsilon` (1e-5) and `stash_type`
/// (1). onnxruntime's `SimplifiedLayerNormalization` without its optional InvStdDev output, so it runs through it.
///
/// Backward: as `SimplifiedLayerNormalization`'s, `dX = r·g − X·r³·mean(g·X)`, `dScale = Σ_rows dY·X·r`.
struct RMSNormalization: Operator {
    static let opType = "RMSNormalization"
    static let sinceVersions = [23]

    private let normalization: SimplifiedLayerNormalization

    init(node: Node, version: Int) throws {
        normalization = try SimplifiedLayerNormalization(node: node, version: 1)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] { [try normalization.run(inputs)[0]] }
}

extension RMSNormalization: DifferentiableOperator {
    // g = dY · scale, r = 1/√(mean(X²) + ε): dX = r·g − X·r³·mean(g·X); dScale = Σ_rows dY·X·r
    func gradient(_ context: GradientContext) throws -> [Tensor?] { try normalization.gradient(context) }
}
