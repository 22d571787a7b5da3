import Foundation
import ONNXGraph

/// `Y = cos(X)` elementwise (ONNX `Cos`).
///
/// Backward: `dX = -dY * sin(X)`.
struct Cos: FloatFunctionOperator {
    static let opType = "Cos"
    static let sinceVersions = [7]

    static func apply(_ x: Float) -> Float { Foundation.cos(x) }
}
