import ONNXGraph

/// Inserts dimensions of size 1 at the `axes` input's positions in the output, without copying; negative axes
/// count from the end of the output's dimensions.
///
/// Backward: `dX = dY` reshaped to the input's shape.
struct Unsqueeze: Operator {
    static let opType = "Unsqueeze"
    static let sinceVersions = [13, 21]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let axes = try inputs.required(1).intValues("Unsqueeze axes")
        let rank = input.rank + axes.count
        var inserted = Set<Int>()
        for requested in axes {
            let axis = requested < 0 ? requested + rank : requested
            guard axis >= 0, axis < rank, inserted.insert(axis).inserted else {
                throw KernelError("Unsqueeze axes \(axes) must be distinct and in \(-rank)...\(rank - 1) for an input "
                    + "of shape \(input.shape)")
            }
        }
        var remaining = input.shape.makeIterator()
        let shape = (0..<rank).map { inserted.contains($0) ? 1 : remaining.next()! }
        return [input.reshaped(shape)]
    }
}

extension Unsqueeze: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = reshape(dY, X.shape); the axes input has no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try context.outputGradient().reshaped(context.inputShape(0)) : nil, nil]
    }
}
