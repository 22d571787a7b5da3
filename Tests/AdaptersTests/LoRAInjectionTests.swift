import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Adapters attached to real exports: with B = 0 or scale 0 the model is the base model; otherwise it equals the
/// base model with the adapter merged into its weights; and gradients reach A and B correctly.
final class LoRAInjectionTests: XCTestCase {

    /// An adapter with random A and B (B's frozen rows zero), so that every part of the injection matters.
    static func randomAdapter(_ model: Model, seed: UInt64) throws -> LoRAAdapter {
        let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
        var adapter = LoRAAdapter.initialized(modules: modules, configuration: LoRAConfiguration(rank: 4, alpha: 8), seed: seed)
        var generator = SeededGenerator(seed: seed &+ 1)
        for module in modules {
            var values = [Float](repeating: 0, count: module.outFeatures * 4)
            for output in module.trainableOutputs {
                for r in 0..<4 { values[output * 4 + r] = Float(generator.nextGaussian() * 0.2) }
            }
            adapter.b[module.modulePath] = Tensor(shape: [module.outFeatures, 4], floats: values)
        }
        return adapter
    }

    func testZeroBAndZeroScaleGiveTheBaseModelExactly() throws {
        for fixture in try ExportFixture.all() {
            let (model, feeds) = (try fixture.model(), try fixture.inputs())
            let base = try Session(model: model).run(feeds)["logits"]!
            let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
            let fresh = try AdaptedModel(model: model, adapter: .initialized(modules: modules, configuration: .init(), seed: 1))
            assertClose(try Session(model: fresh.model, additionalInitializers: fresh.initializers).run(feeds)["logits"]!,
                        base, relative: 0, absolute: 0, "\(fixture.name): B = 0")
            var off = try AdaptedModel(model: model, adapter: Self.randomAdapter(model, seed: 2))
            off.initializers[AdaptedModel.scaleName] = Tensor(shape: [], floats: [0])
            assertClose(try Session(model: off.model, additionalInitializers: off.initializers).run(feeds)["logits"]!,
                        base, relative: 0, absolute: 0, "\(fixture.name): scale 0")
        }
    }

    func testAdaptedModelEqualsTheMergedWeights() throws {
        for fixture in try ExportFixture.all() {
            let (model, feeds) = (try fixture.model(), try fixture.inputs())
            let adapter = try Self.randomAdapter(model, seed: 3)
            let adapted = try AdaptedModel(model: model, adapter: adapter)
            let logits = try Session(model: adapted.model, additionalInitializers: adapted.initializers).run(feeds)["logits"]!
            let merged = try Session(model: model)
            for module in adapter.modules {
                let initializer = try XCTUnwrap(model.graph.initializers.first { $0.name == module.weight })
                try merged.setInitializer(module.weight, adapter.merged(try model.loadTensor(initializer), module: module))
            }
            let reference = try merged.run(feeds)["logits"]!
            assertClose(logits, reference, relative: 1e-4, absolute: 1e-4, fixture.name)
            let base = try Session(model: model).run(feeds)["logits"]!
            XCTAssertNotNil(closenessProblem(logits, base, relative: 1e-3, absolute: 1e-3), "\(fixture.name): the adapter changes the output")
        }
    }

    /// `(loss(x + h) − loss(x − h)) / 2h` for element `index` of initializer `parameter` (currently `values`),
    /// h = 1e-2; the initializer is restored afterwards.
    static func centralDifference(
        _ session: Session, _ parameter: String, _ values: Tensor, index: Int, feeds: [String: Tensor],
        loss: ([String: Tensor]) -> Double
    ) throws -> Double {
        let h: Float = 1e-2
        var shifted = values.floats
        shifted[index] += h
        try session.setInitializer(parameter, Tensor(shape: values.shape, floats: shifted))
        let plus = loss(try session.run(feeds))
        shifted[index] -= 2 * h
        try session.setInitializer(parameter, Tensor(shape: values.shape, floats: shifted))
        let minus = loss(try session.run(feeds))
        try session.setInitializer(parameter, values)
        return (plus - minus) / (2 * Double(h))
    }

    func testAdapterGradientsMatchFiniteDifferencesAndFrozenColumnsStayFrozen() throws {
        for name in ["llama-dynamo", "gpt2-torchscript", "gpt-neox-dynamo"] {
            let fixture = try ExportFixture.named(name)
            let (model, feeds) = (try fixture.model(), try fixture.inputs())
            let adapted = try AdaptedModel(model: model, adapter: Self.randomAdapter(model, seed: 4))
            let session = try Session(model: adapted.model, additionalInitializers: adapted.initializers)
            let pass = try session.forward(feeds, trainable: Set(adapted.parameterNames))
            let logits = pass.outputs["logits"]!
            let weights = (0..<logits.count).map { Float(sin(Double($0) * 0.37)) }
            func loss(_ outputs: [String: Tensor]) -> Double {
                zip(outputs["logits"]!.floats, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            var gradients = try pass.backward(["logits": Tensor(shape: logits.shape, floats: weights)])
            adapted.maskFrozenOutputs(&gradients)
            for parameter in [adapted.parameterNames[0], adapted.parameterNames[1], adapted.parameterNames.last!] {
                let values = adapted.initializers[parameter]!
                let gradient = gradients[parameter]!
                for index in Swift.stride(from: 0, to: values.count, by: max(1, values.count / 4)) {
                    var numeric = try Self.centralDifference(session, parameter, values, index: index, feeds: feeds, loss: loss)
                    let module = adapted.modules.first { parameter == AdaptedModel.transposedBName($0.modulePath) }
                    if let module, !module.trainableOutputs.contains(index % module.outFeatures) { numeric = 0 }  // masked
                    XCTAssertEqual(Double(gradient.floats[index]), numeric, accuracy: 2e-2 + 3e-2 * abs(numeric),
                                   "\(name) d/d\(parameter)[\(index)]")
                }
            }
        }
    }
}
