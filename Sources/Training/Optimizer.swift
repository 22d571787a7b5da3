import Adapters
import Foundation
import ONNXGraph

/// An optimiser over named float32 parameters, with PyTorch's update rules (so that a run agrees with a TRL/PEFT
/// run step for step), and state that checkpoints can save and restore.
public protocol Optimizer: Sendable {
    /// Applies one update to `parameters` from `gradients` (same names and shapes) at `learningRate`.
    mutating func step(_ parameters: inout [String: Tensor], gradients: [String: Tensor], learningRate: Double) throws
    /// Everything the next step depends on, for checkpoints.
    var state: OptimizerState { get }
    /// Restores `state` (from a checkpoint of the same optimiser and parameters).
    mutating func restore(_ state: OptimizerState) throws
}

/// An optimiser's state: a step count and named float buffers (moment estimates), keyed `"<parameter>/<buffer>"`.
public struct OptimizerState: Sendable, Equatable, Codable {
    public var kind: String
    public var step: Int
    public var buffers: [String: [Float]]

    public init(kind: String, step: Int, buffers: [String: [Float]]) {
        self.kind = kind
        self.step = step
        self.buffers = buffers
    }
}

/// AdamW as `torch.optim.AdamW` computes it (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019):
///
///     p ← p · (1 − lr·λ)
///     m ← lerp(m, g, 1 − β1)            v ← β2·v + (1 − β2)·g²
///     p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
///
/// Bias corrections in Double, tensor arithmetic in Float, in PyTorch's order.
public struct AdamW: Optimizer {
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    public var weightDecay: Double
    private var stepCount = 0
    private var firstMoments: [String: [Float]] = [:]
    private var secondMoments: [String: [Float]] = [:]

    public init(beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public mutating func step(_ parameters: inout [String: Tensor], gradients: [String: Tensor], learningRate: Double) throws {
        stepCount += 1
        let biasCorrection1 = 1 - pow(beta1, Double(stepCount))
        let biasCorrection2Root = (1 - pow(beta2, Double(stepCount))).squareRoot()
        let stepSize = Float(learningRate / biasCorrection1)
        let decay = Float(1 - learningRate * weightDecay)
        let (b1Weight, b2, b2Complement) = (Float(1 - beta1), Float(beta2), Float(1 - beta2))
        let (correction2, epsilon) = (Float(biasCorrection2Root), Float(self.epsilon))
        for name in parameters.keys.sorted() {
            var p = try parameterValues(parameters, name)
            let g = try gradientValues(gradients, name, count: p.count)
            var m = firstMoments[name] ?? [Float](repeating: 0, count: p.count)
            var v = secondMoments[name] ?? [Float](repeating: 0, count: p.count)
            for i in p.indices {
                if weightDecay != 0 { p[i] *= decay }
                m[i] = lerp(m[i], g[i], b1Weight)
                v[i] = v[i] * b2 + b2Complement * (g[i] * g[i])
                let denominator = v[i].squareRoot() / correction2 + epsilon
                p[i] += -stepSize * (m[i] / denominator)
            }
            firstMoments[name] = m
            secondMoments[name] = v
            parameters[name] = Tensor(shape: parameters[name]!.shape, floats: p)
        }
    }

    public var state: OptimizerState {
        var buffers: [String: [Float]] = [:]
        for (name, values) in firstMoments { buffers["\(name)/exp_avg"] = values }
        for (name, values) in secondMoments { buffers["\(name)/exp_avg_sq"] = values }
        return OptimizerState(kind: "adamw", step: stepCount, buffers: buffers)
    }

    public mutating func restore(_ state: OptimizerState) throws {
        guard state.kind == "adamw" else { throw TrainingError.optimizerStateMismatch(expected: "adamw", found: state.kind) }
        stepCount = state.step
        firstMoments = state.buffers.filter { $0.key.hasSuffix("/exp_avg") }
            .reduce(into: [:]) { $0[String($1.key.dropLast("/exp_avg".count))] = $1.value }
        secondMoments = state.buffers.filter { $0.key.hasSuffix("/exp_avg_sq") }
            .reduce(into: [:]) { $0[String($1.key.dropLast("/exp_avg_sq".count))] = $1.value }
    }
}

/// RMSprop as `torch.optim.RMSprop` computes it (Hinton's lecture 6e; the optimiser of the DPO paper's runs),
/// without momentum or centring:
///
///     g ← g + λ·p                      s ← α·s + (1 − α)·g²
///     p ← p − lr · g / (√s + ε)
public struct RMSprop: Optimizer {
    public var alpha: Double
    public var epsilon: Double
    public var weightDecay: Double
    private var stepCount = 0
    private var squareAverages: [String: [Float]] = [:]

    public init(alpha: Double = 0.99, epsilon: Double = 1e-8, weightDecay: Double = 0) {
        self.alpha = alpha
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public mutating func step(_ parameters: inout [String: Tensor], gradients: [String: Tensor], learningRate: Double) throws {
        stepCount += 1
        let (alpha, complement) = (Float(self.alpha), Float(1 - self.alpha))
        let (epsilon, rate, decay) = (Float(self.epsilon), Float(learningRate), Float(weightDecay))
        for name in parameters.keys.sorted() {
            var p = try parameterValues(parameters, name)
            let g = try gradientValues(gradients, name, count: p.count)
            var s = squareAverages[name] ?? [Float](repeating: 0, count: p.count)
            for i in p.indices {
                let gradient = weightDecay != 0 ? g[i] + p[i] * decay : g[i]
                s[i] = s[i] * alpha + complement * (gradient * gradient)
                p[i] += -rate * (gradient / (s[i].squareRoot() + epsilon))
            }
            squareAverages[name] = s
            parameters[name] = Tensor(shape: parameters[name]!.shape, floats: p)
        }
    }

    public var state: OptimizerState {
        OptimizerState(kind: "rmsprop", step: stepCount,
                       buffers: squareAverages.reduce(into: [:]) { $0["\($1.key)/square_avg"] = $1.value })
    }

    public mutating func restore(_ state: OptimizerState) throws {
        guard state.kind == "rmsprop" else { throw TrainingError.optimizerStateMismatch(expected: "rmsprop", found: state.kind) }
        stepCount = state.step
        squareAverages = state.buffers.reduce(into: [:]) { $0[String($1.key.dropLast("/square_avg".count))] = $1.value }
    }
}

/// `torch.lerp` for floats: `a + w·(b − a)`, or `b − (b − a)·(1 − w)` when `w >= 0.5` (PyTorch's two forms).
@inline(__always)
private func lerp(_ a: Float, _ b: Float, _ weight: Float) -> Float {
    weight < 0.5 ? a + weight * (b - a) : b - (b - a) * (1 - weight)
}

private func parameterValues(_ parameters: [String: Tensor], _ name: String) throws -> [Float] {
    guard let tensor = parameters[name], case .float(let values) = tensor.storage else {
        throw TrainingError.invalidTrainingState(reason: "parameter '\(name)' is not a float tensor")
    }
    return values
}

private func gradientValues(_ gradients: [String: Tensor], _ name: String, count: Int) throws -> [Float] {
    guard let tensor = gradients[name], case .float(let values) = tensor.storage, values.count == count else {
        throw TrainingError.invalidTrainingState(reason: "no gradient of \(count) values for parameter '\(name)'")
    }
    return values
}

/// Scales `gradients` in place so that their global L2 norm is at most `maxNorm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`coefficient = maxNorm / (norm + 1e-6)`, applied when below 1), and
/// returns the norm before clipping (TRL's `grad_norm`). The norm is accumulated in Double.
@discardableResult
public func clipGradientNorm(_ gradients: inout [String: Tensor], maxNorm: Double?) -> Double {
    var sumOfSquares = 0.0
    for name in gradients.keys.sorted() {
        let values = gradients[name]!.floats
        var norm: Float = 0  // each tensor's norm in float32, as torch's per-tensor norms
        for value in values { norm += value * value }
        sumOfSquares += Double(norm.squareRoot()) * Double(norm.squareRoot())
    }
    let total = sumOfSquares.squareRoot()
    guard let maxNorm else { return total }
    let coefficient = maxNorm / (total + 1e-6)
    if coefficient < 1 {
        let scale = Float(coefficient)
        for (name, tensor) in gradients {
            gradients[name] = Tensor(shape: tensor.shape, floats: tensor.floats.map { $0 * scale }, dataType: tensor.dataType)
        }
    }
    return total
}
