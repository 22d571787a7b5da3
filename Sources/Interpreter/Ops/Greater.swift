import ONNXGraph

/// `A > B` elementwise with numpy broadcasting, as a bool tensor (ONNX `Greater`).
///
/// Backward: none (bool output).
struct Greater: Operator {
    static let opType = "Greater"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastComparison(try inputs.required(0), try inputs.required(1), Self.opType,
                                 float: { $0 > $1 }, integer: { $0 > $1 })]
    }
}
