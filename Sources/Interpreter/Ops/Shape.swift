import ONNXGraph

/// The input's dimensions as a 1-D int64 tensor, from opset 15 only those in `start..<end` (negative values count
/// from the end; both are clamped to `0...rank`).
struct Shape: Operator {
    static let opType = "Shape"
    static let sinceVersions = [13, 15, 19, 21]

    /// First dimension reported, possibly negative.
    let start: Int
    /// One past the last dimension reported, possibly negative; nil for the end.
    let end: Int?

    init(node: Node, version: Int) throws {
        start = version >= 15 ? try node.int("start", default: 0) : 0
        end = version >= 15 ? try node.int("end") : nil
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let shape = try inputs.required(0).shape
        let rank = shape.count
        func clamped(_ position: Int) -> Int { min(max(position < 0 ? position + rank : position, 0), rank) }
        let first = clamped(start)
        let last = max(clamped(end ?? rank), first)
        return [Tensor(shape: [last - first], int64s: shape[first..<last].map { Int64($0) })]
    }
}
