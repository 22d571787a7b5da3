import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Optimisers, schedules and clipping against numbers torch and transformers computed
/// (`tools/make_optimizer_references.py`).
final class OptimizerTests: XCTestCase {
    struct Reference: Decodable {
        struct Run: Decodable {
            var optimizer: String
            var lr: Double
            var weight_decay: Double
            var shapes: [String: [Int]]
            var initial: [String: [Float]]
            var gradients: [[String: [Float]]]
            var parameters: [[String: [Float]]]
        }
        struct Schedule: Decodable {
            var schedule: String
            var warmup: Int
            var total: Int
            var peak: Double
            var rates: [Double]
        }
        struct Clipping: Decodable {
            var max_norm: Double
            var gradients: [[Float]]
            var shapes: [[Int]]
            var norm: Double
            var clipped: [[Float]]
        }
        var optimizers: [Run]
        var schedules: [Schedule]
        var clipping: [Clipping]
    }

    static let reference: Reference = {
        let data = try! Data(contentsOf: URL(fileURLWithPath: fixturePath("optimizers/optimizers.json")))
        return try! JSONDecoder().decode(Reference.self, from: data)
    }()

    func testOptimizersFollowTorchStepForStep() throws {
        for run in Self.reference.optimizers {
            var optimizer: any Optimizer = run.optimizer == "adamw"
                ? AdamW(weightDecay: run.weight_decay) : RMSprop(weightDecay: run.weight_decay)
            var parameters = run.initial.reduce(into: [String: Tensor]()) {
                $0[$1.key] = Tensor(shape: run.shapes[$1.key]!, floats: $1.value)
            }
            for (step, gradients) in run.gradients.enumerated() {
                let tensors = gradients.reduce(into: [String: Tensor]()) {
                    $0[$1.key] = Tensor(shape: run.shapes[$1.key]!, floats: $1.value)
                }
                try optimizer.step(&parameters, gradients: tensors, learningRate: run.lr)
                for (name, expected) in run.parameters[step] {
                    assertClose(parameters[name]!, Tensor(shape: run.shapes[name]!, floats: expected),
                                relative: 1e-6, absolute: 1e-7, "\(run.optimizer) lr \(run.lr) wd \(run.weight_decay) step \(step + 1) \(name)")
                }
            }
        }
    }

    func testOptimizerStateRestoresToTheSameNextStep() throws {
        let run = Self.reference.optimizers[1]
        func tensors(_ values: [String: [Float]]) -> [String: Tensor] {
            values.reduce(into: [:]) { $0[$1.key] = Tensor(shape: run.shapes[$1.key]!, floats: $1.value) }
        }
        var original = AdamW(weightDecay: run.weight_decay)
        var parameters = tensors(run.initial)
        for step in 0..<3 { try original.step(&parameters, gradients: tensors(run.gradients[step]), learningRate: run.lr) }
        var restored = AdamW(weightDecay: run.weight_decay)
        try restored.restore(original.state)
        var copy = parameters
        try original.step(&parameters, gradients: tensors(run.gradients[3]), learningRate: run.lr)
        try restored.step(&copy, gradients: tensors(run.gradients[3]), learningRate: run.lr)
        for name in parameters.keys { XCTAssertEqual(parameters[name]!.floats, copy[name]!.floats, "bit-identical after restore") }
        var wrong = RMSprop()
        assertThrows(["adamw", "rmsprop"]) { try wrong.restore(original.state) }
    }

    func testSchedulesMatchTransformers() {
        for reference in Self.reference.schedules {
            let shape: LearningRateSchedule.Shape = reference.schedule.hasPrefix("constant") ? .constant
                : reference.schedule == "linear" ? .linear : .cosine
            let schedule = LearningRateSchedule(peak: reference.peak, shape: shape, warmupSteps: reference.warmup,
                                                totalSteps: reference.total)
            for (step, expected) in reference.rates.enumerated() {
                XCTAssertEqual(schedule.rate(atStep: step), expected, accuracy: 1e-12, "\(reference.schedule) step \(step)")
            }
        }
    }

    func testClippingMatchesClipGradNorm() {
        for reference in Self.reference.clipping {
            var gradients: [String: Tensor] = [:]
            for (index, values) in reference.gradients.enumerated() {
                gradients["g\(index)"] = Tensor(shape: reference.shapes[index], floats: values)
            }
            let norm = clipGradientNorm(&gradients, maxNorm: reference.max_norm)
            XCTAssertEqual(norm, reference.norm, accuracy: 1e-5 * reference.norm)
            for (index, expected) in reference.clipped.enumerated() {
                assertClose(gradients["g\(index)"]!, Tensor(shape: reference.shapes[index], floats: expected),
                            relative: 1e-6, absolute: 1e-7, "max_norm \(reference.max_norm)")
            }
        }
    }
}
