import ONNXGraph

/// `C = A - B` elementwise with numpy broadcasting (ONNX `Sub`; 14 adds the 8- and 16-bit integer types).
/// Integers wrap on overflow.
///
/// Backward: `dA = dC`, `dB = -dC`, each summed over the axes its input was broadcast along.
struct Sub: ArithmeticOperator {
    static let opType = "Sub"
    static let sinceVersions = [13, 14]

    static func float(_ a: Float, _ b: Float) -> Float { a - b }
    static func integer(_ a: Int64, _ b: Int64) -> Int64 { a &- b }
}

extension Sub: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dA = Σ_broadcast dC, dB = −Σ_broadcast dC
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dC = context.outputGradient()
        return [
            context.wants(0) ? try reduceGradient(dC, to: context.inputShape(0)) : nil,
            context.wants(1) ? try transform(reduceGradient(dC, to: context.inputShape(1)), Negation.self) : nil,
        ]
    }
}
