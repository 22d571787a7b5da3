import Foundation
import ONNXGraph

/// `Y = tanh(X)` elementwise (ONNX `Tanh`).
///
/// Backward: `dX = dY * (1 - Y²)`.
struct Tanh: FloatFunctionOperator {
    static let opType = "Tanh"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { Foundation.tanh(x) }
}
