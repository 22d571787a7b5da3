import ONNXGraph

/// The same values under the shape given by the second input, without copying. In that shape a -1 (at most one)
/// is inferred from the element count, and a 0 copies the input's dimension at the same position, unless
/// `allowzero` (opset 14 on) is set, when 0 is a zero-size dimension.
struct Reshape: Operator {
    static let opType = "Reshape"
    static let sinceVersions = [13, 14, 19, 21]

    /// Whether a 0 in the shape means a zero-size dimension rather than "keep the input's".
    let allowZero: Bool

    init(node: Node, version: Int) throws {
        allowZero = version >= 14 ? try node.int("allowzero", default: 0) != 0 : false
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let data = try inputs.required(0)
        return [data.reshaped(try resolvedShape(try inputs.required(1), for: data.shape))]
    }

    /// The shape an input of `inputShape` takes under the requested `shapeInput`: its -1 inferred, its 0s copied
    /// (unless `allowZero`). Throws when the request is malformed or does not hold the input's element count.
    func resolvedShape(_ shapeInput: Tensor, for inputShape: [Int]) throws(KernelError) -> [Int] {
        let requested = try shapeInput.intValues("Reshape's shape")
        let count = inputShape.reduce(1, *)
        func failure(_ reason: String) -> KernelError {
            KernelError("cannot reshape an input of shape \(inputShape) to \(requested)"
                + (allowZero ? " with allowzero" : "") + ": \(reason)")
        }
        guard shapeInput.rank == 1 else { throw failure("the shape must be a 1-D tensor, got shape \(shapeInput.shape)") }
        var shape: [Int] = []
        var inferred: Int?
        for (axis, size) in requested.enumerated() {
            switch size {
            case -1:
                guard inferred == nil else { throw failure("more than one -1") }
                inferred = axis
                shape.append(1)
            case 0 where !allowZero:
                guard axis < inputShape.count else { throw failure("0 at position \(axis) has no input dimension to copy") }
                shape.append(inputShape[axis])
            case ..<0:
                throw failure("negative size \(size)")
            default:
                shape.append(size)
            }
        }
        if let inferred {
            if allowZero && requested.contains(0) { throw failure("-1 together with 0 is ambiguous under allowzero") }
            let known = shape.reduce(1, *)
            guard known != 0, count % known == 0 else {
                throw failure("the -1 cannot be inferred from \(count) elements")
            }
            shape[inferred] = count / known
        }
        guard shape.reduce(1, *) == count else {
            throw failure("\(shape) holds \(shape.reduce(1, *)) elements, the input \(count)")
        }
        return shape
    }
}

extension Reshape: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dData = dReshaped, reshaped back; the shape input has no gradient.
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try context.outputGradient().reshaped(context.inputShape(0)) : nil, nil]
    }
}
