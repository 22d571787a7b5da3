import ONNXGraph

/// `Y = √X` elementwise (ONNX `Sqrt`); negative values give NaN.
///
/// Backward: `dX = dY / (2 * Y)`.
struct Sqrt: FloatFunctionOperator {
    static let opType = "Sqrt"
    static let sinceVersions = [13]

    static func apply(_ x: Float) -> Float { x.squareRoot() }
}

extension Sqrt: DifferentiableOperator {
    // Reads only its output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(outputs: [0]) }

    // dX = dY / (2 · Y)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        [context.wants(0) ? try combine(context.outputGradient(), try context.output(0), Gradient.self) : nil]
    }

    /// `(dY, Y) ↦ dY / (2 · Y)`: infinite at X = 0, where √ has a vertical tangent.
    private enum Gradient: BinaryKernel {
        static func apply(_ dy: Float, _ y: Float) -> Float { dy / (2 * y) }
    }
}
