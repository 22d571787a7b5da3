import ONNXGraph

/// Cuts the input along `axis` into consecutive parts: of the sizes in the optional `split` input; else (opset 18)
/// into `num_outputs` parts of `ceil(n / num_outputs)`, the last smaller; else into as many equal parts as the
/// node has outputs.
///
/// Backward: `dX` is the output gradients joined along `axis`, zeros for a part no gradient reached.
struct Split: Operator {
    static let opType = "Split"
    static let sinceVersions = [13, 18]

    /// The axis cut, possibly negative.
    let axis: Int
    /// `num_outputs` (opset 18 on), nil when absent.
    let numOutputs: Int?
    /// Number of outputs the node names.
    let outputCount: Int
    /// The op version, which decides how a dimension that does not divide evenly is cut.
    let version: Int

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: 0)
        numOutputs = version >= 18 ? try node.int("num_outputs") : nil
        outputCount = node.outputs.count
        self.version = version
        if let numOutputs, numOutputs < 1 || numOutputs < outputCount {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "num_outputs",
                                              reason: "is \(numOutputs), but the node has \(outputCount) outputs")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let axis = try resolveAxis(self.axis, in: input.shape)
        let size = input.shape[axis]
        let sizes = try partSizes(splitInput: inputs.optional(1), size: size, shape: input.shape)
        var start = 0
        return try sizes.map { partSize throws(KernelError) -> Tensor in
            defer { start += partSize }
            return try part(of: input, along: axis, start..<(start + partSize))
        }
    }

    /// The length of each part along an axis of `size`.
    private func partSizes(splitInput: Tensor?, size: Int, shape: [Int]) throws(KernelError) -> [Int] {
        if let splitInput {
            guard numOutputs == nil else {
                throw KernelError("Split takes either the split input or the num_outputs attribute, not both")
            }
            let sizes = try splitInput.intValues("Split's split")
            guard sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == size, sizes.count >= max(outputCount, 1) else {
                throw KernelError("Split sizes \(sizes) must be >= 0, sum to \(size) (axis \(axis) of shape \(shape)) "
                    + "and cover the node's \(outputCount) outputs")
            }
            return sizes
        }
        let parts = numOutputs ?? outputCount
        guard parts >= 1 else { throw KernelError("Split has no outputs to cut into") }
        if numOutputs == nil && version < 18 {
            guard size % parts == 0 else {
                throw KernelError("Split cannot cut axis \(axis) of shape \(shape) into \(parts) equal parts")
            }
            return [Int](repeating: size / parts, count: parts)
        }
        let partSize = (size + parts - 1) / parts
        let last = size - partSize * (parts - 1)
        guard last >= 0 else {
            throw KernelError("Split cannot cut axis \(axis) of shape \(shape) into \(parts) parts of \(partSize)")
        }
        return [Int](repeating: partSize, count: parts - 1) + [last]
    }
}

extension Split: DifferentiableOperator {
    // dX = concat(dY_0, dY_1, ..., axis), dY_i = 0 where no gradient reached output i; split has no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return context.inputs.map { _ in nil } }
        let axis = try resolveAxis(self.axis, in: context.inputShape(0))
        // The forward pass may cut more parts than the node names outputs; those have no gradient either
        // (`outputGradient` gives zeros shaped like the output).
        let parts = (0..<context.outputCount).map { context.outputGradient($0) }
        return [try concatenated(parts, along: axis)] + context.inputs.dropFirst().map { _ in nil }
    }
}
