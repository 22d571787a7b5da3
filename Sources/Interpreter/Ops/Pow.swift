import Foundation
import ONNXGraph

/// `Z = X ^ Y` elementwise with numpy broadcasting (ONNX `Pow`; 15 adds bfloat16 exponents).
///
/// Unlike the other arithmetic ops the exponent may have a different type from the base; the output has the
/// base's type. Integer bases are raised exactly (wrapping on overflow) by integer exponents, and by floating
/// exponents through `Double` with the result truncated toward zero, as onnxruntime does. A scalar exponent of
/// 2, 0.5, 1 or 3 — `x²` in RMSNorm, `sqrt` — skips `pow`.
///
/// Backward: `dX = dZ * Y * X^(Y-1)`, `dY = dZ * Z * ln(X)`, each summed over the axes its input was broadcast
/// along.
struct Pow: Operator {
    static let opType = "Pow"
    static let sinceVersions = [13, 15]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let base = try inputs.required(0), exponent = try inputs.required(1)
        let shape = try broadcastShape([base.shape, exponent.shape])
        switch (base.storage, exponent.storage) {
        case (.float(let x), .float(let y)):
            return [Self.floatPower(x, y, base: base, exponent: exponent, shape: shape)]
        case (.float(let x), .int64(let y)):
            return [Self.floatPower(x, y.map { Float($0) }, base: base, exponent: exponent, shape: shape)]
        case (.int64(let x), .int64(let y)):
            if x.contains(0), y.contains(where: { $0 < 0 }),
               broadcastKernel(x, base.shape, y, exponent.shape, outputShape: shape, ZeroToNegativePower.self)
                .contains(true) {
                throw KernelError("Pow: integer 0 raised to a negative power")
            }
            let values = broadcastKernel(x, base.shape, y, exponent.shape, outputShape: shape, IntegerPower.self)
            return [Tensor(shape: shape, int64s: wrappedToWidth(values, base.dataType), dataType: base.dataType)]
        case (.int64(let x), .float(let y)):
            let values = broadcastKernel(x, base.shape, y, exponent.shape, outputShape: shape, IntegerFloatPower.self)
            return [Tensor(shape: shape, int64s: wrappedToWidth(values, base.dataType), dataType: base.dataType)]
        default:
            throw KernelError("Pow is not defined for a \(base.dataType) base and a \(exponent.dataType) exponent")
        }
    }

    /// Floating `x ^ y` (the values of `base` and `exponent`), with fast paths for common scalar exponents.
    private static func floatPower(_ x: [Float], _ y: [Float], base: Tensor, exponent: Tensor, shape: [Int]) -> Tensor {
        let values: [Float]
        if y.count == 1 && shape == base.shape {
            switch y[0] {
            case 1: values = x
            case 2: values = mapKernel(x, Square.self)
            case 3: values = mapKernel(x, Cube.self)
            case 0.5: values = mapKernel(x, SquareRoot.self)
            case let power: values = x.map { Foundation.pow($0, power) }
            }
        } else {
            values = broadcastKernel(x, base.shape, y, exponent.shape, outputShape: shape, FloatPower.self)
        }
        return Tensor(shape: shape, floats: roundedToPrecision(values, base.dataType), dataType: base.dataType)
    }

    /// Whether an integer `0 ^ negative` occurs, which has no integer result.
    private enum ZeroToNegativePower: BinaryKernel {
        static func apply(_ base: Int64, _ exponent: Int64) -> Bool { base == 0 && exponent < 0 }
    }

    private enum Square: UnaryKernel {
        static func apply(_ x: Float) -> Float { x * x }
    }

    private enum Cube: UnaryKernel {
        static func apply(_ x: Float) -> Float { x * x * x }
    }

    /// `x ^ 0.5`: `pow(-0, 0.5)` is +0 and `pow(-inf, 0.5)` is +inf, where `sqrt` gives -0 and NaN.
    private enum SquareRoot: UnaryKernel {
        static func apply(_ x: Float) -> Float { x == -.infinity ? .infinity : x.squareRoot() + 0 }
    }

    private enum FloatPower: BinaryKernel {
        static func apply(_ x: Float, _ y: Float) -> Float { Foundation.pow(x, y) }
    }

    /// An integer base to a floating power, computed in `Double` and truncated toward zero as onnxruntime does.
    private enum IntegerFloatPower: BinaryKernel {
        static func apply(_ x: Int64, _ y: Float) -> Int64 {
            Cast.truncatedToInt64(Foundation.pow(Double(x), Double(y)))
        }
    }

    /// `base ^ exponent` by repeated squaring, wrapping on overflow; a negative exponent gives the truncated
    /// reciprocal (0 unless the base is ±1). Base 0 with a negative exponent is rejected before this is called.
    private enum IntegerPower: BinaryKernel {
        static func apply(_ base: Int64, _ exponent: Int64) -> Int64 {
            if exponent < 0 {
                switch base {
                case 1: return 1
                case -1: return exponent & 1 == 0 ? 1 : -1
                default: return 0
                }
            }
            var result: Int64 = 1, factor = base, remaining = exponent
            while remaining > 0 {
                if remaining & 1 == 1 { result = result &* factor }
                factor = factor &* factor
                remaining >>= 1
            }
            return result
        }
    }
}
