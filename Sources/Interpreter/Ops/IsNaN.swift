import ONNXGraph

/// Whether each element is NaN, as a bool tensor (ONNX `IsNaN`; 20 adds the float8 types, which this
/// interpreter does not hold).
///
/// Backward: none (bool output).
struct IsNaN: Operator, UnaryKernel {
    static let opType = "IsNaN"
    static let sinceVersions = [13, 20]

    init(node: Node, version: Int) throws {}

    static func apply(_ x: Float) -> Bool { x.isNaN }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        guard case .float(let x) = input.storage else {
            throw KernelError("IsNaN needs a floating-point input, got \(input.dataType)")
        }
        return [Tensor(shape: input.shape, bools: mapKernel(x, Self.self))]
    }
}
