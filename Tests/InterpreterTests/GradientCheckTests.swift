import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Every gradient rule against central finite differences, over every one-node reference case of its op (the
/// shapes, attribute values and broadcasting cases of `tools/op_cases/`), by TestSupport's `gradientCheck`.
final class GradientCheckTests: XCTestCase {
    /// Ops whose outputs are integers or bools, or constants: no gradient flows through them.
    static let nonDifferentiable: Set<String> = [
        "Shape", "Constant", "ConstantOfShape", "Range", "Equal", "Greater", "LessOrEqual", "And", "IsNaN",
        // Integer products, and the quantiser before them (its float y_scale alone is not the gradient's path): the
        // fused DynamicQuantizeMatMul they are rewritten into carries the straight-through rule
        // (DynamicQuantizationTests).
        "DynamicQuantizeLinear", "MatMulInteger", "MatMulIntegerToFloat",
    ]

    /// Cases where no float32 step resolves the derivative, checked by hand in float64 instead (numpy, the test's
    /// weights): `softmax_large_values` has inputs near 1000, so the relative step is ~1.0 (h = 1e-2 and 1e-4 in
    /// float64 give the rule's 0.14390); `layernorm_constant_rows` has zero-variance rows where only epsilon
    /// (1e-5) is left, so any step above ~1e-5 changes InvStdDev by percents (h = 1e-5 in float64 gives the
    /// rule's 109.8777).
    static let beyondFloat32Differences: Set<String> = ["softmax_large_values", "layernorm_constant_rows"]
    /// Elements checked per input (spread over the tensor), to keep the test fast.
    static let elementsPerInput = 12

    func testEveryRegisteredOpHasAGradientRuleOrIsDeclaredNonDifferentiable() {
        let registry = OperatorRegistry.standard
        for opType in registry.operatorTypes {
            let type = registry.implementation(of: opType) ?? registry.implementation(of: opType, domain: "com.microsoft")
                ?? registry.implementation(of: opType, domain: "onnx_dpo")
            let differentiable = type is any DifferentiableOperator.Type
            XCTAssertNotEqual(differentiable, Self.nonDifferentiable.contains(opType),
                              "\(opType): \(differentiable ? "has a rule but is listed as non-differentiable" : "has no gradient rule")")
        }
    }

    func testGradientRulesMatchCentralFiniteDifferences() throws {
        let folder = OpReferenceTests.folder
        var failures: [String] = []
        var checkedCases = 0
        for name in try OpReferenceTests.caseNames() {
            // Values where the function is not smooth, or not finite, say nothing about a rule.
            if ["extremes", "nan", "inf", "float16", "bfloat16", "half"].contains(where: name.contains) { continue }
            if Self.beyondFloat32Differences.contains(name) { continue }
            let model = try Model.load(path: "\(folder)/\(name).onnx")
            guard let node = model.graph.nodes.first, !Self.nonDifferentiable.contains(node.opType) else { continue }
            let feeds = try NPZ.read(path: "\(folder)/\(name).inputs.npz")
            let trainable = Set(feeds.filter { $0.value.dataType == .float && $0.value.count > 0 }.keys)
            if trainable.isEmpty { continue }
            do {
                if let problem = try Self.check(model, feeds: feeds, trainable: trainable) {
                    failures.append("\(name): \(problem)")
                } else {
                    checkedCases += 1
                }
            } catch {
                failures.append("\(name): \(error)")
            }
        }
        XCTAssertGreaterThan(checkedCases + failures.count, 200, "expected most op cases to be differentiable")
        XCTAssert(failures.isEmpty, "\(failures.count) cases fail (\(checkedCases) pass):\n" + failures.joined(separator: "\n"))
    }

    /// The tape keeps only what each rule's `savedValues` names for the inputs that need a gradient: with one
    /// input trainable at a time, every rule still finds what it reads and gives that input exactly the gradient it
    /// gets when all are trainable.
    func testEachInputAloneGetsTheGradientItGetsWithAll() throws {
        let folder = OpReferenceTests.folder
        var failures: [String] = []
        var checked = 0
        for name in try OpReferenceTests.caseNames() {
            if ["extremes", "nan", "inf", "float16", "bfloat16", "half"].contains(where: name.contains) { continue }
            let model = try Model.load(path: "\(folder)/\(name).onnx")
            guard let node = model.graph.nodes.first, !Self.nonDifferentiable.contains(node.opType) else { continue }
            let feeds = try NPZ.read(path: "\(folder)/\(name).inputs.npz")
            let trainable = Set(feeds.filter { $0.value.dataType == .float && $0.value.count > 0 }.keys)
            guard trainable.count > 1 else { continue }
            let session = try Session(model: model, optimize: false)
            func gradients(_ trainable: Set<String>) throws -> [String: Tensor] {
                let pass = try session.forward(feeds, trainable: trainable)
                var seeds: [String: Tensor] = [:]
                for (index, (output, value)) in pass.outputs.sorted(by: { $0.key < $1.key }).enumerated()
                where value.storage.kind == .float && value.dataType == .float {
                    seeds[output] = Tensor(shape: value.shape, floats: uniformTestValues(value.count, seed: UInt64(17 + index)))
                }
                return seeds.isEmpty ? [:] : try pass.backward(seeds)
            }
            do {
                let all = try gradients(trainable)
                for input in trainable.sorted() {
                    let alone = try gradients([input])
                    if alone[input]?.floats.map(\.bitPattern) != all[input]?.floats.map(\.bitPattern) { failures.append("\(name): \(input) differs") }
                }
                checked += 1
            } catch {
                failures.append("\(name): \(error)")
            }
        }
        XCTAssertGreaterThan(checked, 90)
        XCTAssert(failures.isEmpty, "\(failures.count) cases fail (\(checked) checked):\n" + failures.joined(separator: "\n"))
    }

    /// Compares analytic and numeric gradients of `loss = Σ R·Y` over the float outputs, R fixed and random.
    static func check(_ model: Model, feeds: [String: Tensor], trainable: Set<String>) throws -> String? {
        let session = try Session(model: model, optimize: false)
        let pass = try session.forward(feeds, trainable: trainable)
        var weights: [String: Tensor] = [:]
        for (index, (name, output)) in pass.outputs.sorted(by: { $0.key < $1.key }).enumerated()
        where output.storage.kind == .float && output.dataType == .float {
            weights[name] = Tensor(shape: output.shape, floats: uniformTestValues(output.count, seed: UInt64(17 + index)),
                                   dataType: output.dataType)
        }
        if weights.isEmpty { return nil }
        let names = weights.keys.sorted()
        let gradients = try pass.backward(weights)
        for name in trainable.sorted() {
            let x = feeds[name]!
            let analytic = try XCTUnwrap(gradients[name]).floats
            let indices = Swift.stride(from: 0, to: x.count, by: max(1, x.count / Self.elementsPerInput))
            let problem = try gradientCheck(name, values: x, analytic: analytic, indices: indices) { shifted in
                var inputs = feeds
                inputs[name] = shifted
                let outputs = try session.run(inputs)
                return .weightedSum(names.flatMap { outputs[$0]!.floats }, names.flatMap { weights[$0]!.floats })
            }
            if let problem { return problem }
        }
        return nil
    }
}
