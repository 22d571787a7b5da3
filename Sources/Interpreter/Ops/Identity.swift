import ONNXGraph

/// `Y = X` (ONNX `Identity`; 14, 16, 19 and 21 add sequence, optional and new element types, not new semantics
/// for tensors). TorchScript exports write it where they deduplicate equal weights. No copy is made.
///
/// Backward: `dX = dY`.
struct Identity: Operator {
    static let opType = "Identity"
    static let sinceVersions = [13, 14, 16, 19, 21]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try inputs.required(0)]
    }
}

extension Identity: DifferentiableOperator {
    // Reads nothing saved.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = dY
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? context.outputGradient() : nil]
    }
}
