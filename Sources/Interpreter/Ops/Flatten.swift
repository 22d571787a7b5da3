import ONNXGraph

/// Reshapes to 2-D `[product of dims before axis, product of the rest]`, without copying. `axis` may be
/// `-rank...rank`; 0 gives `[1, count]`.
///
/// Backward: `dX = dY` reshaped to the input's shape.
struct Flatten: Operator {
    static let opType = "Flatten"
    static let sinceVersions = [13, 21]

    /// Where the second output dimension starts, possibly negative.
    let axis: Int

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: 1)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let axis = self.axis < 0 ? self.axis + input.rank : self.axis
        guard axis >= 0, axis <= input.rank else {
            throw KernelError("Flatten axis \(self.axis) is out of range for an input of shape \(input.shape) "
                + "(accepted: \(-input.rank)...\(input.rank))")
        }
        let outer = input.shape[..<axis].reduce(1, *)
        let inner = input.shape[axis...].reduce(1, *)
        return [input.reshaped([outer, inner])]
    }
}

extension Flatten: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = reshape(dY, X.shape)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try context.outputGradient().reshaped(context.inputShape(0)) : nil]
    }
}
