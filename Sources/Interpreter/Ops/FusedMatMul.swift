import ONNXGraph

/// `com.microsoft.FusedMatMul` (onnxruntime's contrib op): `Y = alpha · op(A) · op(B)`, where `transA` / `transB`
/// transpose the last two axes of A / B. Models optimised by onnxruntime contain it, and `GraphOptimizer` writes
/// it in place of `Transpose` → `MatMul`, so that the transposed operand is read in place instead of copied.
/// `transBatchA` / `transBatchB` (batch-axis transposes) are not supported and are refused at load.
struct FusedMatMul: Operator {
    static let opType = "FusedMatMul"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let alpha: Float
    let transA: Bool
    let transB: Bool

    init(node: Node, version: Int) throws {
        alpha = try node.float("alpha", default: 1)
        transA = try node.int("transA", default: 0) != 0
        transB = try node.int("transB", default: 0) != 0
        for attribute in ["transBatchA", "transBatchB"] where try node.int(attribute, default: 0) != 0 {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: attribute,
                                              reason: "= 1 is not supported")
        }
    }

    /// op(B) packed once (`Session.packWeights`), read instead of input 1.
    var packed: PackedWeight?
    var packedWeight: PackedWeight? { packed }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        if let packed { return [try matrixProduct(inputs.required(0), packed, alpha: alpha)] }
        return [try matrixProduct(inputs.required(0), inputs.required(1), transposeA: transA, transposeB: transB, alpha: alpha)]
    }
}

extension FusedMatMul: WeightPackingOperator {
    // A transposed A is not folded into rows; those products keep their unpacked B.
    var packableInput: Int? { transA ? nil : 1 }

    func packing(_ weight: Tensor) throws -> FusedMatMul? {
        guard !transA, let packed = try PackedWeight(weight, transposed: transB) else { return nil }
        var op = self
        op.packed = packed
        return op
    }
}

extension FusedMatMul: DifferentiableOperator {
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
                ? try matrixProductGradient(context.outputGradient(), packed, alpha: alpha, aShape: context.inputShape(0))
                : nil
            return [dA, nil]
        }
        let (dA, dB) = try matrixProductGradient(
            context.inputs.optional(0), context.inputs.optional(1), aShape: context.inputShape(0),
            bShape: context.inputShape(1), context.outputGradient(), transposeA: transA, transposeB: transB, alpha: alpha,
            wantA: context.wants(0), wantB: context.wants(1))
        return [dA, dB]
    }
}
