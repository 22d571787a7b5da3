import ONNXGraph

/// `A <= B` elementwise with numpy broadcasting, as a bool tensor (ONNX `LessOrEqual`; 16 adds bfloat16).
/// Opset 12's version is listed too, so that models at opsets 13 to 15 resolve it.
///
/// Backward: none (bool output).
struct LessOrEqual: ComparisonOperator {
    static let opType = "LessOrEqual"
    static let sinceVersions = [12, 16]

    static func float(_ a: Float, _ b: Float) -> Bool { a <= b }
    static func integer(_ a: Int64, _ b: Int64) -> Bool { a <= b }
}
