import ONNXGraph

/// `A == B` elementwise with numpy broadcasting, as a bool tensor (ONNX `Equal`; 19 adds strings, which this
/// interpreter does not hold). NaN equals nothing.
///
/// Backward: none (bool output).
struct Equal: Operator {
    static let opType = "Equal"
    static let sinceVersions = [13, 19]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastComparison(try inputs.required(0), try inputs.required(1), Self.opType,
                                 float: { $0 == $1 }, integer: { $0 == $1 }, bool: { $0 == $1 })]
    }
}
