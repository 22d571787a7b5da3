import ONNXGraph

/// Removes dimensions of size 1, without copying: those at the optional `axes` input (each must be 1), or every
/// one when `axes` is omitted.
///
/// Backward: `dX = dY` reshaped to the input's shape.
struct Squeeze: Operator {
    static let opType = "Squeeze"
    static let sinceVersions = [13, 21]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        guard let axesInput = inputs.optional(1) else {
            return [input.reshaped(input.shape.filter { $0 != 1 })]
        }
        let axes = try axesInput.intValues("Squeeze axes")
        var removed = Set<Int>()
        for requested in axes {
            let axis = try resolveAxis(requested, in: input.shape, "Squeeze axis")
            guard input.shape[axis] == 1, removed.insert(axis).inserted else {
                throw KernelError("Squeeze axes \(axes) must name distinct dimensions of size 1 of shape \(input.shape)")
            }
        }
        let shape = input.shape.indices.filter { !removed.contains($0) }.map { input.shape[$0] }
        return [input.reshaped(shape)]
    }
}

extension Squeeze: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = reshape(dY, X.shape); the axes input has no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dX = context.wants(0) ? try context.outputGradient().reshaped(context.inputShape(0)) : nil
        return [dX] + context.inputs.dropFirst().map { _ in nil }
    }
}
