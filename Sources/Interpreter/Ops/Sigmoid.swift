import Foundation
import ONNXGraph

/// `Y = 1 / (1 + e^-X)` elementwise (ONNX `Sigmoid`), evaluated as `e^X / (1 + e^X)` for negative `X` so that
/// large negative inputs give tiny values rather than overflowing `e^-X`.
///
/// Backward: `dX = dY * Y * (1 - Y)`.
struct Sigmoid: Operator {
    static let opType = "Sigmoid"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType) { x in
            if x >= 0 { return 1 / (1 + Foundation.exp(-x)) }
            let e = Foundation.exp(x)
            return e / (1 + e)
        }]
    }
}
