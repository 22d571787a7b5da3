import ONNXGraph

/// `Y = -X` elementwise (ONNX `Neg`); integers wrap (`-Int32.min` is `Int32.min`).
///
/// Backward: `dX = -dY`.
struct Neg: Operator {
    static let opType = "Neg"
    static let sinceVersions = [13]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        switch input.widenedStorage {
        case .float:
            return [try mapFloats(input, Self.opType, FloatNegation.self)]
        case .int64(let x):
            let values = wrappedToWidth(mapKernel(x, IntegerNegation.self), input.dataType)
            return [Tensor(shape: input.shape, int64s: values, dataType: input.dataType)]
        case .bool, .bytes:  // widened storage is never bytes
            throw KernelError("Neg is not defined for bool inputs")
        }
    }

    private enum FloatNegation: UnaryKernel {
        static func apply(_ x: Float) -> Float { -x }
    }

    private enum IntegerNegation: UnaryKernel {
        static func apply(_ x: Int64) -> Int64 { 0 &- x }
    }
}

extension Neg: DifferentiableOperator {
    // Reads nothing saved.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dX = −dY
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try transform(context.outputGradient(), Negation.self) : nil]
    }
}
