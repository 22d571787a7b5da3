import ONNXGraph

/// `Y = √X` elementwise (ONNX `Sqrt`); negative values give NaN.
///
/// Backward: `dX = dY / (2 * Y)`.
struct Sqrt: Operator {
    static let opType = "Sqrt"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { $0.squareRoot() }]
    }
}
