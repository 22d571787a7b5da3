import Foundation
import ONNXGraph

/// The Gaussian error linear unit, elementwise (ONNX `Gelu`, opset 20; Hendrycks & Gimpel, arXiv:1606.08415):
///
///     approximate = "none":  Y = X/2 · (1 + erf(X / √2))
///     approximate = "tanh":  Y = X/2 · (1 + tanh(√(2/π) · (X + 0.044715 X³)))
///
/// Backward ("none"): `dX = dY * (Φ(X) + X φ(X))` with `Φ(x) = (1 + erf(x/√2))/2`, `φ(x) = e^(-x²/2)/√(2π)`.
/// Backward ("tanh"): with `u = √(2/π)(X + 0.044715 X³)`, `t = tanh(u)`,
/// `dX = dY * (½(1 + t) + ½ X (1 - t²) √(2/π)(1 + 3·0.044715 X²))`.
struct Gelu: Operator {
    static let opType = "Gelu"
    static let sinceVersions = [20]

    /// Whether to use the tanh approximation; the ONNX attribute is the string `approximate`.
    let approximate: Bool

    init(node: Node, version: Int) throws {
        switch try node.string("approximate", default: "none") {
        case "none": approximate = false
        case "tanh": approximate = true
        case let other:
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "approximate",
                                              reason: "must be \"none\" or \"tanh\", got \"\(other)\"")
        }
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        return [approximate ? try mapFloats(input, Self.opType, TanhApproximation.self)
                            : try mapFloats(input, Self.opType, Exact.self)]
    }

    /// `X/2 · (1 + erf(X / √2))`.
    private enum Exact: UnaryKernel {
        static func apply(_ x: Float) -> Float { 0.5 * x * (1 + Foundation.erf(x * Float(0.5.squareRoot()))) }
    }

    /// `X/2 · (1 + tanh(√(2/π) · (X + 0.044715 X³)))`.
    private enum TanhApproximation: UnaryKernel {
        static func apply(_ x: Float) -> Float {
            0.5 * x * (1 + Foundation.tanh(Float((2 / Double.pi).squareRoot()) * (x + 0.044715 * x * x * x)))
        }
    }
}

extension Gelu: DifferentiableOperator {
    // "none": dX = dY · (Φ(X) + X · φ(X)), Φ(x) = (1 + erf(x/√2))/2, φ(x) = e^(−x²/2)/√(2π)
    // "tanh": dX = dY · (½(1 + t) + ½ X (1 − t²) √(2/π)(1 + 3·0.044715 X²)), t = tanh(√(2/π)(X + 0.044715 X³))
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil] }
        let dY = context.outputGradient(), x = try context.input(0)
        return [approximate ? try combine(dY, x, TanhApproximationGradient.self)
                            : try combine(dY, x, ExactGradient.self)]
    }

    /// `(dY, X) ↦ dY · (Φ(X) + X · φ(X))`.
    private enum ExactGradient: BinaryKernel {
        static func apply(_ dy: Float, _ x: Float) -> Float {
            let cumulative = 0.5 * (1 + Foundation.erf(x * Float(0.5.squareRoot())))
            let density = Float(1 / (2 * Double.pi).squareRoot()) * fastExp(-0.5 * x * x)
            return dy * (cumulative + x * density)
        }
    }

    /// `(dY, X) ↦ dY · (½(1 + t) + ½ X (1 − t²) √(2/π)(1 + 3·0.044715 X²))`.
    private enum TanhApproximationGradient: BinaryKernel {
        static func apply(_ dy: Float, _ x: Float) -> Float {
            let c = Float((2 / Double.pi).squareRoot())
            let t = Foundation.tanh(c * (x + 0.044715 * x * x * x))
            return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))
        }
    }
}
