import ONNXGraph

/// A value fixed in the graph, given by exactly one of the attributes `value`, `value_float`, `value_floats`,
/// `value_int` or `value_ints`. String and sparse constants are refused when the model loads.
struct Constant: Operator {
    static let opType = "Constant"
    static let sinceVersions = [13, 19, 21]

    /// The attributes ONNX allows, exactly one of which a node sets.
    private static let valueAttributes = [
        "value", "value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings", "sparse_value",
    ]

    /// The constant.
    let value: Tensor

    init(node: Node, version: Int) throws {
        func invalid(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        let present = Self.valueAttributes.filter { node.attributes[$0] != nil }
        guard present.count == 1 else {
            throw invalid(present.isEmpty ? "value" : present.joined(separator: ", "),
                          "exactly one of \(Self.valueAttributes.joined(separator: ", ")) must be set, found \(present.count)")
        }
        switch present[0] {
        case "value":
            value = try node.tensor("value")!
        case "value_float":
            value = Tensor(scalar: try node.float("value_float", default: 0))
        case "value_floats":
            let floats = try node.floats("value_floats")!
            value = Tensor(shape: [floats.count], floats: floats)
        case "value_int":
            value = Tensor(scalar: Int64(try node.int("value_int", default: 0)))
        case "value_ints":
            let ints = try node.ints("value_ints")!
            value = Tensor(shape: [ints.count], int64s: ints.map { Int64($0) })
        default:
            throw invalid(present[0], "string and sparse constants are not supported by this interpreter")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] { [value] }
}
