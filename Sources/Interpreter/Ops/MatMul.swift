import ONNXGraph

/// `MatMul`: numpy's matmul (1-D operands promoted, batch axes broadcast); see `matrixProduct`.
struct MatMul: Operator {
    static let opType = "MatMul"
    static let sinceVersions = [13]

    /// B packed once (`Session.packWeights`), read instead of input 1.
    var packed: PackedWeight?
    var packedWeight: PackedWeight? { packed }

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        if let packed { return [try matrixProduct(inputs.required(0), packed, alpha: 1)] }
        return [try matrixProduct(inputs.required(0), inputs.required(1))]
    }
}

extension MatMul: WeightPackingOperator {
    var packableInput: Int? { 1 }

    func packing(_ weight: Tensor) throws -> MatMul? {
        guard let packed = try PackedWeight(weight, transposed: false) else { return nil }
        var op = self
        op.packed = packed
        return op
    }
}

extension MatMul: DifferentiableOperator {
    // dA reads B and dB reads A: a frozen weight's product keeps no activation. A packed weight is the op's own
    // (its input slot is gone, so dB is never wanted).
    func savedValues(wanted: [Bool]) -> SavedValues {
        if packed != nil { return SavedValues(inputs: []) }
        return SavedValues(inputs: Set((wanted.first == true ? [1] : []) + (wanted.count > 1 && wanted[1] ? [0] : [])))
    }

    // dA = alpha · dY · op(B)ᵀ, dB = alpha · op(A)ᵀ · dY (see `matrixProductGradient`)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        if let packed {
            let dA = context.wants(0)
                ? try matrixProductGradient(context.outputGradient(), packed, alpha: 1, aShape: context.inputShape(0))
                : nil
            return [dA, nil]
        }
        let (dA, dB) = try matrixProductGradient(
            context.inputs.optional(0), context.inputs.optional(1), aShape: context.inputShape(0),
            bShape: context.inputShape(1), context.outputGradient(), transposeA: false, transposeB: false, alpha: 1,
            wantA: context.wants(0), wantB: context.wants(1))
        return [dA, dB]
    }
}
