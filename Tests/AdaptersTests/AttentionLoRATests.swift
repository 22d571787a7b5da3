import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// LoRA through ONNX Attention-23 and com.microsoft MultiHeadAttention (fixtures/attention,
/// `tools/make_attention_models.py`): q and v are the projections feeding the op's query and value inputs (through
/// the rotary, Reshape and Transpose of the export), 2 targets per layer; gradients reach A and B through the op, and
/// a training step runs with finite gradients.
final class AttentionLoRATests: XCTestCase {
    static let fixtures = ["attention23-llama", "mha-llama"]

    static func load(_ name: String) throws -> (Model, [String: Tensor]) {
        let folder = repositoryPath("fixtures/attention/\(name)")
        return (try Model.load(path: "\(folder)/model.onnx"), try NPZ.read(path: "\(folder)/inputs.npz"))
    }

    func testQAndVAreTheProjectionsFeedingTheAttentionOp() throws {
        for name in Self.fixtures {
            let (model, _) = try Self.load(name)
            let targets = try LoRATargets.find(in: model)
            XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v], name)
            XCTAssertEqual(targets.map(\.layer), [0, 0, 1, 1], name)
            for target in targets {
                XCTAssertEqual(target.inFeatures, 32, "\(name) \(target)")
                XCTAssertEqual(target.layout, .matMul, "\(name) \(target)")
            }
            // 4 query heads and 2 key/value heads of 8: q is 32 wide, v 16.
            let modules = try LoRAModule.modules(for: targets, model: model)
            XCTAssertEqual(modules.map(\.outFeatures), [32, 16, 32, 16], name)
            let all = try LoRATargets.find(in: model, matching: ["all-linear"])
            XCTAssertEqual(Set(all.map(\.kind)), [.q, .k, .v, .o, .mlp], name)
        }
    }

    func testZeroBGivesTheBaseModelAndTheAdapterChangesIt() throws {
        for name in Self.fixtures {
            let (model, feeds) = try Self.load(name)
            let base = try Session(model: model).run(feeds)["logits"]!
            let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
            let fresh = try AdaptedModel(model: model, adapter: .initialized(modules: modules, configuration: .init(), seed: 1))
            assertClose(try Session(model: fresh.model, additionalInitializers: fresh.initializers).run(feeds)["logits"]!,
                        base, relative: 0, absolute: 0, "\(name): B = 0")
            let adapted = try AdaptedModel(model: model, adapter: LoRAInjectionTests.randomAdapter(model, seed: 2))
            let logits = try Session(model: adapted.model, additionalInitializers: adapted.initializers).run(feeds)["logits"]!
            XCTAssertNotNil(closenessProblem(logits, base, relative: 1e-3, absolute: 1e-3), "\(name): the adapter changes the output")
        }
    }

    /// Whole-model LoRA gradients through the attention op against central finite differences (R zero at padded
    /// positions); then one gradient step on A and B lowers the weighted logits loss, every gradient finite.
    func testAdapterGradientsMatchFiniteDifferencesAndAStepLowersTheLoss() throws {
        for name in Self.fixtures {
            let (model, feeds) = try Self.load(name)
            let adapted = try AdaptedModel(model: model, adapter: LoRAInjectionTests.randomAdapter(model, seed: 4))
            let session = try Session(model: adapted.model, additionalInitializers: adapted.initializers)
            let pass = try session.forward(feeds, trainable: Set(adapted.parameterNames))
            let logits = pass.outputs["logits"]!
            let mask = feeds["attention_mask"]!.int64s, vocabulary = logits.shape[2]
            let weights = (0..<logits.count).map { mask[$0 / vocabulary] == 0 ? 0 : Float(sin(Double($0) * 0.37)) }
            let gradients = try pass.backward(["logits": Tensor(shape: logits.shape, floats: weights)])
            XCTAssertEqual(adapted.parameterNames.count, 8, "\(name): A and B of q and v in 2 layers")
            var checked = 0
            for parameter in adapted.parameterNames {
                let values = adapted.initializers[parameter]!, gradient = try XCTUnwrap(gradients[parameter])
                XCTAssert(gradient.floats.allSatisfy(\.isFinite), "\(name) d/d\(parameter) is not finite")
                XCTAssert(gradient.floats.contains { $0 != 0 }, "\(name) d/d\(parameter) is zero")
                let indices = Array(Swift.stride(from: 0, to: values.count, by: max(1, values.count / 3)))
                let problem = try gradientCheck(parameter, values: values, analytic: gradient.floats, indices: indices) { shifted in
                    try session.setInitializer(parameter, shifted)
                    return .weightedSum(try session.run(feeds)["logits"]!.floats, weights, depth: ExportFixture.roundingDepth)
                }
                try session.setInitializer(parameter, values)
                XCTAssertNil(problem, "\(name) d/d\(parameter)")
                checked += indices.count
            }
            XCTAssertGreaterThanOrEqual(checked, 24, name)
            // One step against the gradient: loss = Σ R·logits goes down.
            func loss() throws -> Double {
                zip(try session.run(feeds)["logits"]!.floats, weights).reduce(0) { $0 + Double($1.0) * Double($1.1) }
            }
            let before = try loss()
            for parameter in adapted.parameterNames {
                let values = adapted.initializers[parameter]!.floats, gradient = gradients[parameter]!.floats
                try session.setInitializer(parameter, Tensor(shape: adapted.initializers[parameter]!.shape,
                                                             floats: zip(values, gradient).map { $0 - 1e-3 * $1 }))
            }
            let after = try loss()
            XCTAssertLessThan(after, before, "\(name): a gradient step lowers the loss")
        }
    }
}
