import Foundation
import ONNXGraph

/// `Y = cos(X)` elementwise (ONNX `Cos`).
///
/// Backward: `dX = -dY * sin(X)`.
struct Cos: Operator {
    static let opType = "Cos"
    static let sinceVersions = [7]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { Foundation.cos($0) }]
    }
}
