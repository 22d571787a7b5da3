import Foundation
import ONNXGraph

/// `Z = X ^ Y` elementwise with numpy broadcasting (ONNX `Pow`; 15 adds bfloat16 exponents).
///
/// Unlike the other arithmetic ops the exponent may have a different type from the base; the output has the
/// base's type. Integer bases are raised exactly (wrapping on overflow) by integer exponents, and by floating
/// exponents through `Double` with the result truncated toward zero, as onnxruntime does. A scalar exponent of
/// 2, 0.5, 1 or 3 — `x²` in RMSNorm, `sqrt` — skips `pow`.
///
/// Backward: `dX = dZ * Y * X^(Y-1)` (0 where `Y = 0`), `dY = dZ * Z * ln(X)` (0 where `X = 0`, as in PyTorch),
/// each summed over the axes its input was broadcast along; none for an integer exponent.
struct Pow: Operator {
    static let opType = "Pow"
    static let sinceVersions = [13, 15]

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let base = try inputs.required(0), exponent = try inputs.required(1)
        let shape = try broadcastShape([base.shape, exponent.shape])
        switch (base.widenedStorage, exponent.widenedStorage) {
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

extension Pow: DifferentiableOperator {
    // dX = Σ_broadcast dZ · Y · X^(Y−1)  (0 where Y = 0),  dY = Σ_broadcast dZ · Z · ln(X)  (0 where X = 0)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let base = try context.input(0), exponent = try context.input(1)
        let dZ = context.outputGradient()
        var dBase: Tensor?, dExponent: Tensor?
        if context.wants(0) && base.storage.kind == .float {
            let exponent = exponent.storage.kind == .float ? exponent
                : Tensor(shape: exponent.shape, floats: try exponent.intValues("Pow exponent").map { Float($0) })
            if exponent.count == 1 && exponent.floats[0] == 2 {
                // x² (RMSNorm): one vectorised pass.
                dBase = try reduceGradient(combine(dZ, base, TwiceProduct.self), to: base.shape)
            } else {
                dBase = try reduceGradient(combine(dZ, combine(base, exponent, BaseSlope.self), Product.self),
                                           to: base.shape)
            }
        }
        if context.wants(1) && exponent.storage.kind == .float && base.storage.kind == .float {
            dExponent = try reduceGradient(combine(dZ, combine(try context.output(0), base, ExponentSlope.self),
                                                   Product.self), to: exponent.shape)
        }
        return [dBase, dExponent]
    }

    /// `(X, Y) ↦ Y · X^(Y−1)`, `∂Z/∂X`; 0 where `Y = 0` (`X⁰` is constant), where the formula would give
    /// `0 · 0⁻¹ = NaN` at `X = 0`.
    private enum BaseSlope: BinaryKernel {
        static func apply(_ x: Float, _ y: Float) -> Float { y == 0 ? 0 : y * Foundation.pow(x, y - 1) }
    }

    /// `(dZ, X) ↦ dZ · 2X`: the gradient of `X²`.
    private enum TwiceProduct: BinaryKernel {
        static func apply(_ dz: Float, _ x: Float) -> Float { dz * 2 * x }
    }

    /// `(Z, X) ↦ Z · ln(X)`, `∂Z/∂Y`; 0 where `X = 0`, as in PyTorch (`0^Y` is 0 or 1 on either side for
    /// `Y > 0`), where the formula would give `0 · −∞ = NaN`.
    private enum ExponentSlope: BinaryKernel {
        static func apply(_ z: Float, _ x: Float) -> Float { x == 0 ? 0 : z * Foundation.log(x) }
    }
}
