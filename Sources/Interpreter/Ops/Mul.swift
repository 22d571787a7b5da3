import ONNXGraph

/// `C = A * B` elementwise with numpy broadcasting (ONNX `Mul`; 14 adds the 8- and 16-bit integer types).
/// Integers wrap on overflow.
///
/// Backward: `dA = dC * B`, `dB = dC * A`, each summed over the axes its input was broadcast along.
struct Mul: ArithmeticOperator {
    static let opType = "Mul"
    static let sinceVersions = [13, 14]

    static func float(_ a: Float, _ b: Float) -> Float { a * b }
    static func integer(_ a: Int64, _ b: Int64) -> Int64 { a &* b }
}

extension Mul: DifferentiableOperator {
    // dA reads B and dB reads A.
    func savedValues(wanted: [Bool]) -> SavedValues {
        SavedValues(inputs: Set((wanted.first == true ? [1] : []) + (wanted.count > 1 && wanted[1] ? [0] : [])))
    }

    // dA = Σ_broadcast dC · B, dB = Σ_broadcast dC · A
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dC = context.outputGradient()
        return [
            context.wants(0) ? try reduceGradient(combine(dC, context.input(1), Product.self), to: context.inputShape(0)) : nil,
            context.wants(1) ? try reduceGradient(combine(dC, context.input(0), Product.self), to: context.inputShape(1)) : nil,
        ]
    }
}
