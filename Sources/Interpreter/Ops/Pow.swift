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
            return [Self.floatPower(x, mapElements(y) { Float($0) }, base: base, exponent: exponent, shape: shape)]
        case (.int64(let x), .int64(let y)):
            if x.contains(0), y.contains(where: { $0 < 0 }),
               broadcastBinary(x, base.shape, y, exponent.shape, outputShape: shape, { $0 == 0 && $1 < 0 })
                .contains(true) {
                throw KernelError("Pow: integer 0 raised to a negative power")
            }
            let values = broadcastBinary(x, base.shape, y, exponent.shape, outputShape: shape, Self.integerPower)
            return [Tensor(shape: shape, int64s: wrappedToWidth(values, base.dataType), dataType: base.dataType)]
        case (.int64(let x), .float(let y)):
            let values = broadcastBinary(x, base.shape, y, exponent.shape, outputShape: shape) { x, y in
                Cast.truncatedToInt64(Foundation.pow(Double(x), Double(y)))
            }
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
            case 2: values = mapElements(x) { $0 * $0 }
            case 3: values = mapElements(x) { $0 * $0 * $0 }
            // pow(-0, 0.5) is +0 and pow(-inf, 0.5) is +inf, where sqrt gives -0 and NaN.
            case 0.5: values = mapElements(x) { $0 == -.infinity ? .infinity : $0.squareRoot() + 0 }
            case let power: values = mapElements(x) { Foundation.pow($0, power) }
            }
        } else {
            values = broadcastBinary(x, base.shape, y, exponent.shape, outputShape: shape) { Foundation.pow($0, $1) }
        }
        return Tensor(shape: shape, floats: roundedToPrecision(values, base.dataType), dataType: base.dataType)
    }

    /// `base ^ exponent` by repeated squaring, wrapping on overflow; a negative exponent gives the truncated
    /// reciprocal (0 unless the base is ±1). Base 0 with a negative exponent is rejected before this is called.
    private static func integerPower(_ base: Int64, _ exponent: Int64) -> Int64 {
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
