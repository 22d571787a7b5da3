import Foundation
import ONNXGraph

/// `Y = tanh(X)` elementwise (ONNX `Tanh`).
///
/// Backward: `dX = dY * (1 - Y²)`.
struct Tanh: Operator {
    static let opType = "Tanh"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { Foundation.tanh($0) }]
    }
}
