import Foundation
import ONNXGraph

/// `Y = sin(X)` elementwise (ONNX `Sin`).
///
/// Backward: `dX = dY * cos(X)`.
struct Sin: FloatFunctionOperator {
    static let opType = "Sin"
    static let sinceVersions = [7]

    static func apply(_ x: Float) -> Float { Foundation.sin(x) }
}
