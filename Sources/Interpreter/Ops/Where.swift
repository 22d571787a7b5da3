import ONNXGraph

/// `output = condition ? X : Y` elementwise with numpy broadcasting of all three (ONNX `Where`; 16 only adds
/// bfloat16, so 9 and 16 share this implementation).
///
/// Backward: `dX = condition ? dOutput : 0`, `dY = condition ? 0 : dOutput`, each summed over the axes its input
/// was broadcast along; none for `condition`.
struct Where: Operator {
    static let opType = "Where"
    static let sinceVersions = [9, 16]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let condition = try inputs.required(0), x = try inputs.required(1), y = try inputs.required(2)
        guard case .bool(let c) = condition.storage else {
            throw KernelError("Where needs a bool condition, got \(condition.dataType)")
        }
        try requireSameType(x, y, Self.opType)
        let shape = try broadcastShape([condition.shape, x.shape, y.shape])
        let storage: Tensor.Storage
        switch (x.storage, y.storage) {
        case (.float(let a), .float(let b)):
            storage = .float(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        case (.int64(let a), .int64(let b)):
            storage = .int64(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        case (.bytes(let a), .bytes(let b)):
            storage = .bytes(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        case (.bool(let a), .bool(let b)):
            storage = .bool(broadcastSelect(c, condition.shape, a, x.shape, b, y.shape, outputShape: shape))
        default:
            throw KernelError("Where: X and Y must have the same type, got \(x.dataType) and \(y.dataType)")
        }
        return [Tensor(shape: shape, dataType: x.dataType, storage: storage)]
    }
}

extension Where: DifferentiableOperator {
    // Reads the condition; only the shapes of X and Y.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: [0]) }

    // dX = Σ_broadcast (condition ? dOutput : 0), dY = Σ_broadcast (condition ? 0 : dOutput); none for condition
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let condition = try context.input(0)
        let (xShape, yShape) = (try context.inputShape(1), try context.inputShape(2))
        let (xType, yType) = (try context.inputType(1), try context.inputType(2))
        let dOutput = context.outputGradient()
        guard case .bool(let mask) = condition.storage, case .float(let gradient) = dOutput.storage else {
            throw KernelError("Where: needs a bool condition and a floating-point output gradient, got "
                              + "\(condition.dataType) and \(dOutput.dataType)")
        }
        let zero: [Float] = [0], shape = dOutput.shape
        var dX: Tensor?, dY: Tensor?
        if context.wants(1) && xType.isFloatingPoint {
            let values = broadcastSelect(mask, condition.shape, gradient, shape, zero, [], outputShape: shape)
            dX = try reduceGradient(Tensor(shape: shape, floats: values, dataType: dOutput.dataType), to: xShape)
        }
        if context.wants(2) && yType.isFloatingPoint {
            let values = broadcastSelect(mask, condition.shape, zero, [], gradient, shape, outputShape: shape)
            dY = try reduceGradient(Tensor(shape: shape, floats: values, dataType: dOutput.dataType), to: yShape)
        }
        return [nil, dX, dY]
    }
}
