import ONNXGraph

/// `A > B` elementwise with numpy broadcasting, as a bool tensor (ONNX `Greater`).
///
/// Backward: none (bool output).
struct Greater: ComparisonOperator {
    static let opType = "Greater"
    static let sinceVersions = [13]

    static func float(_ a: Float, _ b: Float) -> Bool { a > b }
    static func integer(_ a: Int64, _ b: Int64) -> Bool { a > b }
}
