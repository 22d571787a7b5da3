import ONNXGraph

/// `A == B` elementwise with numpy broadcasting, as a bool tensor (ONNX `Equal`; 19 adds strings, which this
/// interpreter does not hold). NaN equals nothing.
///
/// Backward: none (bool output).
struct Equal: ComparisonOperator {
    static let opType = "Equal"
    static let sinceVersions = [13, 19]

    static func float(_ a: Float, _ b: Float) -> Bool { a == b }
    static func integer(_ a: Int64, _ b: Int64) -> Bool { a == b }
    static let comparesBools = true
    static func bool(_ a: Bool, _ b: Bool) -> Bool { a == b }
}
