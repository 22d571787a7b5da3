import ONNXGraph

/// A tensor of the shape given by the input, every element equal to the one-element attribute `value`
/// (float32 0 when absent); its type is `value`'s. An empty shape gives a scalar.
struct ConstantOfShape: Operator {
    static let opType = "ConstantOfShape"
    static let sinceVersions = [9, 20, 21]

    /// The fill value, as a scalar.
    let value: Tensor

    init(node: Node, version: Int) throws {
        guard let value = try node.tensor("value") else {
            self.value = Tensor(scalar: Float(0))
            return
        }
        guard value.count == 1 else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "value",
                                              reason: "must hold one element, got shape \(value.shape)")
        }
        self.value = value.reshaped([])
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let shapeInput = try inputs.required(0)
        let shape = try shapeInput.intValues("ConstantOfShape's shape")
        guard shapeInput.rank == 1, shape.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("ConstantOfShape's shape must be a 1-D tensor of sizes >= 0, got \(shape) "
                + "(shape \(shapeInput.shape))")
        }
        // Every output position reads the single value: a view with all strides 0.
        let fill = StridedView(shape: shape, strides: [Int](repeating: 0, count: shape.count))
        return [try moveElements(from: [value], shape: shape, dataType: value.dataType, fill)]
    }
}
