import ONNXGraph

/// `C = A * B` elementwise with numpy broadcasting (ONNX `Mul`; 14 adds the 8- and 16-bit integer types).
///
/// Backward: `dA = dC * B`, `dB = dC * A`, each summed over the axes its input was broadcast along.
struct Mul: Operator {
    static let opType = "Mul"
    static let sinceVersions = [13, 14]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastArithmetic(try inputs.required(0), try inputs.required(1), Self.opType,
                                 float: { $0 * $1 }, integer: { $0 &* $1 })]
    }
}
