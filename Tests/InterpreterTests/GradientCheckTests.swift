import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Every gradient rule against central finite differences, over every one-node reference case of its op (the
/// shapes, attribute values and broadcasting cases of `tools/op_cases/`), in float32 with a stated tolerance.
final class GradientCheckTests: XCTestCase {
    /// Ops whose outputs are integers or bools, or constants: no gradient flows through them.
    static let nonDifferentiable: Set<String> = [
        "Shape", "Constant", "ConstantOfShape", "Range", "Equal", "Greater", "LessOrEqual", "And", "IsNaN",
    ]

    /// Central differences in float32: step `h = 1e-3 · max(1, |x|)`, accepted when
    /// `|analytic − numeric| <= 3e-3 + 3e-2 · |numeric|` (float32 rounding of the loss dominates the error).
    static let step: Float = 1e-3
    static let absoluteTolerance = 3e-3
    static let relativeTolerance = 3e-2
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

    /// Compares analytic and numeric gradients of `loss = Σ R·Y` over the float outputs, R fixed and random.
    static func check(_ model: Model, feeds: [String: Tensor], trainable: Set<String>) throws -> String? {
        let session = try Session(model: model, optimize: false)
        let pass = try session.forward(feeds, trainable: trainable)
        var weights: [String: Tensor] = [:]
        for (index, (name, output)) in pass.outputs.sorted(by: { $0.key < $1.key }).enumerated()
        where output.storage.kind == .float && output.dataType == .float {
            weights[name] = Tensor(shape: output.shape, floats: KernelTestValues.values(output.count, seed: UInt64(17 + index)),
                                   dataType: output.dataType)
        }
        if weights.isEmpty { return nil }
        func loss(_ outputs: [String: Tensor]) -> Double {
            weights.reduce(0.0) { total, entry in
                zip(outputs[entry.key]!.floats, entry.value.floats).reduce(total) { $0 + Double($1.0) * Double($1.1) }
            }
        }
        let gradients = try pass.backward(weights)
        for name in trainable.sorted() {
            let x = feeds[name]!
            let analytic = try XCTUnwrap(gradients[name]).floats
            let stride = max(1, x.count / Self.elementsPerInput)
            for index in Swift.stride(from: 0, to: x.count, by: stride) {
                let h = Self.step * max(1, abs(x.floats[index]))
                var values = x.floats
                values[index] += h
                var shifted = feeds
                shifted[name] = Tensor(shape: x.shape, floats: values, dataType: x.dataType)
                let plus = loss(try session.run(shifted))
                values[index] -= 2 * h
                shifted[name] = Tensor(shape: x.shape, floats: values, dataType: x.dataType)
                let minus = loss(try session.run(shifted))
                let numeric = (plus - minus) / (2 * Double(h))
                if !numeric.isFinite { continue }
                let difference = abs(Double(analytic[index]) - numeric)
                if difference > Self.absoluteTolerance + Self.relativeTolerance * abs(numeric) {
                    return "d/d\(name)[\(index)]: rule \(analytic[index]), finite differences \(numeric)"
                }
            }
        }
        return nil
    }
}

/// Deterministic test values in [-1, 1), shared by kernel and gradient tests.
enum KernelTestValues {
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2_000_000) / 1_000_000 - 1
        }
    }
}
