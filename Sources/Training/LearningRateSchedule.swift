import Foundation

/// The learning rate over training, as transformers' `get_scheduler` computes it: a linear warm-up over
/// `warmupSteps` from 0, then constant, linear decay to 0 at `totalSteps`, or a half cosine to 0.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Shape: String, Sendable, CaseIterable, Codable {
        case constant, linear, cosine
    }

    public var peak: Double
    public var shape: Shape
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Double, shape: Shape, warmupSteps: Int = 0, totalSteps: Int) {
        self.peak = peak
        self.shape = shape
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The rate for optimiser step `step` (0-based), `peak · λ(step)` with transformers' `lr_lambda`.
    public func rate(atStep step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step) / Double(max(1, warmupSteps)) }
        let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
        switch shape {
        case .constant:
            return peak
        case .linear:
            return peak * max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps)))
        case .cosine:
            return peak * max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
