import ONNXGraph

/// `Y = 1 / X` elementwise (ONNX `Reciprocal`).
///
/// Backward: `dX = -dY * Y²`.
struct Reciprocal: Operator {
    static let opType = "Reciprocal"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { 1 / $0 }]
    }
}
