import Adapters
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// LoRA on an onnx-community-style int8 file (fixtures/int8/llama-int8): each dynamically quantised projection
/// (`DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scales)`) is one linear layer whose node is the last `Mul`;
/// the adapter reads the float activation before the DynamicQuantizeLinear and adds to the `Mul`'s output; the int8
/// weights stay frozen and the loss's gradient reaches the adapters through the later layers' quantised projections
/// by the straight-through rule.
final class Int8LoRATests: XCTestCase {
    func testQAndVAreTheQuantisedProjectionsFeedingTheAttention() throws {
        let model = try Int8Fixture.model()
        let targets = try LoRATargets.find(in: model)
        XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v])
        XCTAssertEqual(targets.map(\.layer), [0, 0, 1, 1])
        for target in targets {
            let name = target.kind == .q ? "q_proj" : "v_proj"
            XCTAssertEqual(target.layout, .matMulInteger, "\(target)")
            XCTAssertEqual(target.modulePath, "model.layers.\(target.layer).self_attn.\(name)")
            XCTAssertEqual(target.node, "/model/model/layers.\(target.layer)/self_attn/\(name)/MatMul_quant_output_scale_mul")
            XCTAssert(target.weight.hasSuffix("_quantized"), target.weight)
            XCTAssertEqual(target.inFeatures, 64)
            XCTAssertEqual(target.outFeatures, target.kind == .q ? 64 : 32, "4 query heads, 2 key/value heads of 16")
        }
        let all = try LoRATargets.find(in: model, matching: ["all-linear"])
        XCTAssertEqual(Set(all.map(\.kind)), [.q, .k, .v, .o, .mlp])
        XCTAssertEqual(all.filter { $0.kind == .mlp }.count, 6, "gate, up and down per layer")
        XCTAssert(all.allSatisfy { $0.layout == .matMulInteger })
        let modules = try LoRAModule.modules(for: targets, model: model)
        XCTAssertEqual(modules.map(\.outFeatures), [64, 32, 64, 32])
    }

    /// The with-past layout onnx-community publishes (this source names no nodes, so module paths are structural): q
    /// and v found by structure.
    func testQAndVAreFoundInTheWithPastLayout() throws {
        let model = try Model.load(path: repositoryPath("fixtures/int8/llama-with-past-int8/model.onnx"))
        let targets = try LoRATargets.find(in: model)
        XCTAssertEqual(targets.map(\.kind), [.q, .v, .q, .v])
        XCTAssert(targets.allSatisfy { $0.layout == .matMulInteger && $0.inFeatures == 16 })
        XCTAssertEqual(targets.map(\.outFeatures), [16, 8, 16, 8], "2 query heads, 1 key/value head of 8")
    }

    func testZeroBGivesTheBaseModelAndTheAdapterChangesIt() throws {
        let (model, feeds) = (try Int8Fixture.model(), try Int8Fixture.inputs())
        let base = try Session(model: model).run(feeds)["logits"]!
        let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
        let fresh = try AdaptedModel(model: model, adapter: .initialized(modules: modules, configuration: .init(), seed: 1))
        let freshSession = try Session(model: fresh.model, additionalInitializers: fresh.initializers)
        XCTAssertEqual(freshSession.nodes.filter { $0.opType == "DynamicQuantizeMatMul" }.count, 15,
                       "the attached adapters leave every projection fusable")
        assertClose(try freshSession.run(feeds)["logits"]!, base, relative: 0, absolute: 0, "B = 0")
        let adapted = try AdaptedModel(model: model, adapter: LoRAInjectionTests.randomAdapter(model, seed: 2))
        let logits = try Session(model: adapted.model, additionalInitializers: adapted.initializers).run(feeds)["logits"]!
        XCTAssertNotNil(closenessProblem(logits, base, relative: 1e-3, absolute: 1e-3), "the adapter changes the output")
    }

    /// Every adapter parameter's gradient on the int8 model (straight-through through the quantised projections after
    /// it: layer 0's adapters reach the loss through layer 1's q, k, v, o, MLP and the lm_head) against the same
    /// adapter's gradient on the dequantised-weights model, itself checked by central finite differences. They differ
    /// by the activations' 8-bit rounding only: within 5% of the largest gradient of each parameter.
    func testAdapterGradientsMatchTheDequantisedModelsAndFiniteDifferences() throws {
        let (model, feeds) = (try Int8Fixture.model(), try Int8Fixture.inputs())
        let adapter = try LoRAInjectionTests.randomAdapter(model, seed: 4)
        let adapted = try AdaptedModel(model: model, adapter: adapter)
        let session = try Session(model: adapted.model, additionalInitializers: adapted.initializers)
        let pass = try session.forward(feeds, trainable: Set(adapted.parameterNames))
        XCTAssertFalse(pass.recordedOperators.contains("MatMulInteger"))
        let logits = pass.outputs["logits"]!
        let mask = feeds["attention_mask"]!.int64s, vocabulary = logits.shape[2]
        let weights = (0..<logits.count).map { mask[$0 / vocabulary] == 0 ? 0 : Float(sin(Double($0) * 0.37)) }
        let seed = Tensor(shape: logits.shape, floats: weights)
        let straightThrough = try pass.backward(["logits": seed])

        let (dequantized, dequantizedWeights) = try Int8Fixture.dequantized(model)
        let reference = try AdaptedModel(model: dequantized, adapter: adapter)
        let referenceSession = try Session(model: reference.model,
                                           additionalInitializers: reference.initializers.merging(dequantizedWeights) { a, _ in a })
        let exact = try referenceSession.forward(feeds, trainable: Set(reference.parameterNames)).backward(["logits": seed])
        for parameter in adapted.parameterNames {
            let ours = try XCTUnwrap(straightThrough[parameter]).floats, theirs = try XCTUnwrap(exact[parameter]).floats
            let largest = theirs.map(abs).max() ?? 0
            let difference = zip(ours, theirs).map { abs($0 - $1) }.max() ?? 0
            XCTAssertGreaterThan(largest, 1e-4, "\(parameter): a gradient reaches it")
            XCTAssertLessThan(difference, 0.05 * largest, "\(parameter): straight-through vs dequantised model")
        }
        // The reference itself, against central finite differences (layer 0's q adapter: through everything after it).
        let parameter = AdaptedModel.transposedBName("model.layers.0.self_attn.q_proj")
        let values = reference.initializers[parameter]!
        let problem = try gradientCheck(parameter, values: values, analytic: exact[parameter]!.floats, indices: [0, 17, 130, 255]) { shifted in
            try referenceSession.setInitializer(parameter, shifted)
            return .weightedSum(try referenceSession.run(feeds)["logits"]!.floats, weights, depth: ExportFixture.roundingDepth)
        }
        XCTAssertNil(problem)
    }
}
