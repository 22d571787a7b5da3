import ONNXGraph

/// `Y = 1 / X` elementwise (ONNX `Reciprocal`).
///
/// Backward: `dX = -dY * Y²`.
struct Reciprocal: FloatFunctionOperator {
    static let opType = "Reciprocal"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { 1 / x }
}

extension Reciprocal: DifferentiableOperator {
    // Reads only its output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(outputs: [0]) }

    // dX = −dY · Y²
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), try context.output(0), Gradient.self) : nil]
    }

    /// `(dY, Y) ↦ −dY · Y²`.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ y: Float) -> Float { -dy * y * y }
    }
}
