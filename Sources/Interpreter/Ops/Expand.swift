import ONNXGraph

/// Broadcasts the input with `shape` in both directions, as numpy does: the output shape is the broadcast of
/// the input's shape and `shape`, so a 1 in `shape` keeps the input's dimension.
///
/// Backward: `dX = dY` summed over the axes the input was broadcast along.
struct Expand: Operator {
    static let opType = "Expand"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let shapeInput = try inputs.required(1)
        let target = try shapeInput.intValues("Expand's shape")
        guard shapeInput.rank == 1, target.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("Expand's shape must be a 1-D tensor of sizes >= 0, got \(target) (shape \(shapeInput.shape))")
        }
        return [try expanded(input, to: try broadcastShape([input.shape, target]))]
    }
}

extension Expand: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = Σ_broadcast dY; the shape input has no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try reduceGradient(context.outputGradient(), to: context.inputShape(0)) : nil, nil]
    }
}
