import ONNXGraph

/// Logical `A and B` elementwise with numpy broadcasting, on bool tensors (ONNX `And`).
///
/// Backward: none (bool inputs and output).
struct And: Operator, BinaryKernel {
    static let opType = "And"
    static let sinceVersions = [7]

    init(node: Node, version: Int) throws {}

    static func apply(_ a: Bool, _ b: Bool) -> Bool { a && b }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        guard case .bool(let x) = a.storage, case .bool(let y) = b.storage else {
            throw KernelError("And needs bool inputs, got \(a.dataType) and \(b.dataType)")
        }
        let shape = try broadcastShape([a.shape, b.shape])
        return [Tensor(shape: shape, bools: broadcastKernel(x, a.shape, y, b.shape, outputShape: shape, Self.self))]
    }
}
