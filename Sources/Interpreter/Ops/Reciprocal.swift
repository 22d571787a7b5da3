import ONNXGraph

/// `Y = 1 / X` elementwise (ONNX `Reciprocal`).
///
/// Backward: `dX = -dY * Y²`.
struct Reciprocal: FloatFunctionOperator {
    static let opType = "Reciprocal"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { 1 / x }
}
