import ONNXGraph

/// `MatMul`: numpy's matmul (1-D operands promoted, batch axes broadcast); see `matrixProduct`.
struct MatMul: Operator {
    static let opType = "MatMul"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try matrixProduct(inputs.required(0), inputs.required(1))]
    }
}
