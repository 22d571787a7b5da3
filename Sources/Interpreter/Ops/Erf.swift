import Foundation
import ONNXGraph

/// `Y = erf(X)` elementwise (ONNX `Erf`): exporters write exact GELU as `0.5·x·(1 + erf(x/√2))` below opset 20.
///
/// Backward: `dX = dY · 2/√π · e^(−X²)`.
struct Erf: FloatFunctionOperator {
    static let opType = "Erf"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { Foundation.erf(x) }
}
