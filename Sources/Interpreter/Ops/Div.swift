import ONNXGraph

/// `C = A / B` elementwise with numpy broadcasting (ONNX `Div`; 14 adds the 8- and 16-bit integer types).
///
/// Integer division truncates toward zero, as C and onnxruntime do, and division by zero is an error rather than
/// a crash; uint64 (held as `Int64` bit patterns) divides as unsigned. Floating division follows IEEE 754
/// (`1 / 0 = inf`).
///
/// Backward: `dA = dC / B`, `dB = -dC * A / B²`, each summed over the axes its input was broadcast along.
struct Div: ArithmeticOperator {
    static let opType = "Div"
    static let sinceVersions = [13, 14]

    static func float(_ a: Float, _ b: Float) -> Float { a / b }
    /// `dividedReportingOverflow` wraps `Int64.min / -1` to `Int64.min` instead of trapping; zero divisors are
    /// rejected before any division.
    static func integer(_ a: Int64, _ b: Int64) -> Int64 { a.dividedReportingOverflow(by: b).partialValue }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        if let divisors = b.int64Values, try broadcastShape([a.shape, b.shape]).reduce(1, *) > 0,
           divisors.contains(0) {
            // Broadcasting reads every element of B when the output is non-empty, so a zero is always used.
            throw KernelError("Div: integer division by zero (B of shape \(b.shape) holds a 0)")
        }
        if a.dataType == .uint64 {
            return [try broadcastArithmetic(a, b, Self.opType, float: FloatArithmetic<Self>.self,
                                            integer: UnsignedDivision.self)]
        }
        return [try broadcastArithmetic(a, b, Self.self)]
    }
}

/// Division of uint64 values held as `Int64` bit patterns.
private enum UnsignedDivision: BinaryKernel {
    static func apply(_ a: Int64, _ b: Int64) -> Int64 {
        Int64(bitPattern: UInt64(bitPattern: a) / UInt64(bitPattern: b))
    }
}

extension Div: DifferentiableOperator {
    // Both read B; dB also reads C.
    func savedValues(wanted: [Bool]) -> SavedValues {
        SavedValues(inputs: [1], outputs: wanted.count > 1 && wanted[1] ? [0] : [])
    }

    // dA = Σ_broadcast dC / B, dB = −Σ_broadcast dC · C / B
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let dC = context.outputGradient()
        let b = try context.input(1), aShape = try context.inputShape(0)
        return [
            context.wants(0) ? try reduceGradient(combine(dC, b, Quotient.self), to: aShape) : nil,
            context.wants(1) ? try transform(reduceGradient(combine(combine(dC, try context.output(0), Product.self), b, Quotient.self),
                                                            to: b.shape), Negation.self) : nil,
        ]
    }
}
