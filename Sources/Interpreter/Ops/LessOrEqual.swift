import ONNXGraph

/// `A <= B` elementwise with numpy broadcasting, as a bool tensor (ONNX `LessOrEqual`; 16 adds bfloat16).
/// Opset 12's version is listed too, so that models at opsets 13 to 15 resolve it.
///
/// Backward: none (bool output).
struct LessOrEqual: Operator {
    static let opType = "LessOrEqual"
    static let sinceVersions = [12, 16]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastComparison(try inputs.required(0), try inputs.required(1), Self.opType,
                                 float: { $0 <= $1 }, integer: { $0 <= $1 })]
    }
}
