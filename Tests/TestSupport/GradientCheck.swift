import Foundation
import Interpreter
import ONNXGraph

/// The one finite-difference rule of the test suite, used by every gradient test (ops, whole models, LoRA adapters,
/// DPO objectives).
///
/// The functions under test are float32 functions: the interpreter computes in float32, so a graph cannot be
/// evaluated in Double. Everything around the evaluations is Double: the step, the loss (callers sum float32
/// outputs into a Double), and the difference quotient, whose denominator is the step actually taken, the float32
/// values fed minus each other, `x₊ − x₋`, not the `2h` that was asked for (for `|x|` near 1 and `h = 1e-3`,
/// rounding `x ± h` to float32 alone moves the quotient by up to 6e-5 relative).
///
/// For each checked element `x` of the input:
///
///     h        = step · max(1, |x|)                  the step scales with the input's magnitude
///     x₊, x₋   = float32(x + h), float32(x − h)
///     numeric  = (f(x₊) − f(x₋)) / (x₊ − x₋)         central difference, O(h²) truncation error
///     noise    = 2⁻²³ · roundingFactor · scale         float32 rounding in one evaluation of f (LossValue)
///     pass    ⇔  |analytic − numeric| ≤ absoluteFloor + noise / (x₊ − x₋) + relative · |numeric|
///
/// with `step = 1e-3`, `relative = 1e-2`, `absoluteFloor = 1e-4`. The absolute part is the rounding error of an
/// evaluation divided by the step, so one rule holds for one node and for a whole model: a loss summed over many
/// float32 outputs, or computed through many float32 roundings, is allowed proportionally more, and nothing else
/// is. One step serves all: smaller steps drown in rounding on whole models, larger ones cross the kinks of Max,
/// Where and Pow between the one-node cases' random inputs. An element where the difference is not finite says
/// nothing about the rule and is skipped, as are the elements a caller does not pass.
///
/// Measured when the rule was set (largest `|analytic − numeric|` over the tolerance): one-node cases 0.53, whole
/// models 0.29, LoRA adapters 0.25, DPO objectives 0.20. With two rules made 5% wrong on purpose (Mul's
/// gradient for its second input, the DPO objective's chosen-sequence gradients), each of the four tests failed.
public enum FiniteDifferences {
    /// The step relative to `max(1, |x|)`.
    public static let step = 1e-3
    /// The relative part of the tolerance.
    public static let relative = 1e-2
    /// The absolute part of the tolerance when the rounding noise is zero.
    public static let absoluteFloor = 1e-4
    /// Unit roundoff of float32's 24-bit significand, 2⁻²⁴, twice: one rounding on each side of the difference.
    public static let float32Roundoff = 0x1p-23
}

/// A loss value with the two numbers the tolerance of `gradientCheck` scales with (see `FiniteDifferences`): the
/// size of the float32 quantities it is made of, and how many float32 roundings deep each one is.
public struct LossValue: Sendable {
    /// The loss.
    public var value: Double
    /// The size of what float32 rounding acts on: for `Σ R·Y`, `√Σ (R·Y)²` (independent roundings add in
    /// quadrature); for a loss computed in Double from float32 inputs, the loss itself.
    public var scale: Double
    /// How many float32 roundings of `scale` the evaluation may accumulate (1: float32 only in the inputs).
    public var roundingFactor: Double

    public init(_ value: Double, scale: Double, roundingFactor: Double = 1) {
        self.value = value
        self.scale = scale
        self.roundingFactor = roundingFactor
    }

    /// A loss computed in Double from float32 inputs: its own magnitude, one rounding.
    public init(_ value: Double) {
        self.init(value, scale: abs(value))
    }

    /// `Σ R·Y` over float32 outputs `Y`, summed in Double; `depth` is how many roundings each output carries
    /// (1 for one node, `ExportFixture.roundingDepth` for a whole model).
    public static func weightedSum(_ outputs: [Float], _ weights: [Float], depth: Double = 1) -> LossValue {
        var value = 0.0, squares = 0.0
        for (y, r) in zip(outputs, weights) {
            value += Double(y) * Double(r)
            squares += Double(y) * Double(r) * Double(y) * Double(r)
        }
        return LossValue(value, scale: squares.squareRoot(), roundingFactor: depth)
    }
}

/// Why the rule's gradient `analytic` of `loss` at `values` differs from central finite differences at the
/// elements `indices`, or nil when it does not (the rule is `FiniteDifferences`'). The report names `label`, how
/// many of the checked elements differ, the largest difference, and the first few differing values.
/// `loss` receives `values` with one element moved; whatever it changes (a session's initializer) the caller
/// restores afterwards.
public func gradientCheck(
    _ label: String, values: Tensor, analytic: [Float], indices: some Sequence<Int>,
    loss: (Tensor) throws -> LossValue
) throws -> String? {
    precondition(analytic.count == values.count, "\(label): gradient has \(analytic.count) values, input \(values.count)")
    let x = values.floats
    var mismatches: [String] = []
    var count = 0, checked = 0
    var maxDifference = 0.0
    for index in indices {
        let h = FiniteDifferences.step * max(1, abs(Double(x[index])))
        var shifted = x
        shifted[index] = Float(Double(x[index]) + h)
        let plusInput = shifted[index]
        let plus = try loss(Tensor(shape: values.shape, floats: shifted, dataType: values.dataType))
        shifted[index] = Float(Double(x[index]) - h)
        let minusInput = shifted[index]
        let minus = try loss(Tensor(shape: values.shape, floats: shifted, dataType: values.dataType))
        let taken = Double(plusInput) - Double(minusInput)
        let numeric = (plus.value - minus.value) / taken
        guard numeric.isFinite else { continue }
        checked += 1
        let noise = FiniteDifferences.float32Roundoff * max(plus.roundingFactor * plus.scale,
                                                             minus.roundingFactor * minus.scale)
        let tolerance = FiniteDifferences.absoluteFloor + noise / taken + FiniteDifferences.relative * abs(numeric)
        let difference = abs(Double(analytic[index]) - numeric)
        if !(difference <= tolerance) {
            count += 1
            if mismatches.count < 5 {
                mismatches.append("d/d\(label)[\(index)]: rule \(analytic[index]), finite differences \(numeric)"
                    + " (tolerance \(tolerance))")
            }
        }
        if !difference.isNaN { maxDifference = max(maxDifference, difference) }
    }
    guard count > 0 else { return nil }
    return "\(count) of \(checked) checked elements of \(label) differ (max |rule − finite differences| "
        + "\(maxDifference)); first: " + mismatches.joined(separator: "; ")
}

/// The gradients of `trainable` from one forward and backward pass of `session`, seeded at `output` with values that
/// differ per element (so that every row and column of the output gradient matters): what tests comparing two sessions'
/// gradients (packed against unpacked, optimised against not) both compute.
public func seededGradients(_ session: Session, feeds: [String: Tensor], trainable: Set<String>,
                            output: String = "logits") throws -> [String: Tensor] {
    let pass = try session.forward(feeds, trainable: trainable)
    guard let logits = pass.outputs[output] else { throw KernelError("the session returned no '\(output)'") }
    let seed = Tensor(shape: logits.shape, floats: (0..<logits.count).map { Float($0 % 13) * 0.01 - 0.06 },
                      dataType: logits.dataType)
    return try pass.backward([output: seed])
}
