import ONNXGraph

/// `output = condition ? X : Y` elementwise with numpy broadcasting of all three (ONNX `Where`; 16 only adds
/// bfloat16, so 9 and 16 share this implementation).
///
/// Backward: `dX = condition ? dOutput : 0`, `dY = condition ? 0 : dOutput`, each summed over the axes its input
/// was broadcast along; none for `condition`.
struct Where: Operator {
    static let opType = "Where"
    static let sinceVersions = [9, 16]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let condition = try inputs.required(0), x = try inputs.required(1), y = try inputs.required(2)
        guard case .bool(let c) = condition.storage else {
            throw KernelError("Where needs a bool condition, got \(condition.dataType)")
        }
        try requireSameType(x, y, Self.opType)
        let shape = try broadcastShape([condition.shape, x.shape, y.shape])
        let storage: Tensor.Storage
        switch (x.storage, y.storage) {
        case (.float(let a), .float(let b)):
            storage = .float(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        case (.int64(let a), .int64(let b)):
            storage = .int64(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        case (.bool(let a), .bool(let b)):
            storage = .bool(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        default:
            throw KernelError("Where: X and Y must have the same type, got \(x.dataType) and \(y.dataType)")
        }
        return [Tensor(shape: shape, dataType: x.dataType, storage: storage)]
    }
}
