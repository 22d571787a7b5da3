import ONNXGraph

/// `Y = -X` elementwise (ONNX `Neg`); integers wrap (`-Int32.min` is `Int32.min`).
///
/// Backward: `dX = -dY`.
struct Neg: Operator {
    static let opType = "Neg"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        switch input.storage {
        case .float(let x):
            return [Tensor(shape: input.shape, floats: mapElements(x) { -$0 }, dataType: input.dataType)]
        case .int64(let x):
            return [Tensor(shape: input.shape, int64s: wrappedToWidth(mapElements(x) { 0 &- $0 }, input.dataType),
                           dataType: input.dataType)]
        case .bool:
            throw KernelError("Neg is not defined for bool inputs")
        }
    }
}
