import ONNXGraph

/// `C = A + B` elementwise with numpy broadcasting (ONNX `Add`; 14 adds the 8- and 16-bit integer types).
///
/// Backward: `dA = dC`, `dB = dC`, each summed over the axes its input was broadcast along.
struct Add: Operator {
    static let opType = "Add"
    static let sinceVersions = [13, 14]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastArithmetic(try inputs.required(0), try inputs.required(1), Self.opType,
                                 float: { $0 + $1 }, integer: { $0 &+ $1 })]
    }
}
