import ONNXGraph

/// `Y = √X` elementwise (ONNX `Sqrt`); negative values give NaN.
///
/// Backward: `dX = dY / (2 * Y)`.
struct Sqrt: FloatFunctionOperator {
    static let opType = "Sqrt"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { x.squareRoot() }
}
