import Foundation
import ONNXGraph

/// `Y = 1 / (1 + e^-X)` elementwise (ONNX `Sigmoid`), evaluated as `e^X / (1 + e^X)` for negative `X` so that
/// large negative inputs give tiny values rather than overflowing `e^-X`.
///
/// Backward: `dX = dY * Y * (1 - Y)`.
struct Sigmoid: FloatFunctionOperator {
    static let opType = "Sigmoid"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float {
        if x >= 0 { return 1 / (1 + Foundation.exp(-x)) }
        let e = Foundation.exp(x)
        return e / (1 + e)
    }
}
