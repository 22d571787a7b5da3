import ONNXGraph

/// `C = A + B` elementwise with numpy broadcasting (ONNX `Add`; 14 adds the 8- and 16-bit integer types).
/// Integers wrap on overflow.
///
/// Backward: `dA = dC`, `dB = dC`, each summed over the axes its input was broadcast along.
struct Add: ArithmeticOperator {
    static let opType = "Add"
    static let sinceVersions = [13, 14]

    static func float(_ a: Float, _ b: Float) -> Float { a + b }
    static func integer(_ a: Int64, _ b: Int64) -> Int64 { a &+ b }
}

extension Add: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dA = Σ_broadcast dC, dB = Σ_broadcast dC
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dC = context.outputGradient()
        return try (0..<2).map { index throws(KernelError) in
            context.wants(index) ? try reduceGradient(dC, to: context.inputShape(index)) : nil
        }
    }
}
