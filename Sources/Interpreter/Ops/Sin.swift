import Foundation
import ONNXGraph

/// `Y = sin(X)` elementwise (ONNX `Sin`).
///
/// Backward: `dX = dY * cos(X)`.
struct Sin: Operator {
    static let opType = "Sin"
    static let sinceVersions = [7]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { Foundation.sin($0) }]
    }
}
