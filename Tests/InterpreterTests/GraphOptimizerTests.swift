import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// The session's rewrites change no result: every fixture gives the same logits with and without them.
final class GraphOptimizerTests: XCTestCase {
    func testFusedTransposeMatMulGivesTheUnoptimisedLogits() throws {
        var fusedSomewhere = false
        var swishSomewhere = false
        for fixture in try ExportFixture.all() {
            let model = try fixture.model()
            let inputs = try fixture.inputs()
            let optimized = try Session(model: model)
            let plain = try Session(model: model, optimize: false)
            // Each transA / transB flag stands for one Transpose folded away.
            let fused = optimized.nodes.filter { $0.opType == "FusedMatMul" }
                .map { node in ["transA", "transB"].filter { (try? node.int($0, default: 0)) == 1 }.count }
                .reduce(0, +)
            let transposes = { (session: Session) in session.nodes.filter { $0.opType == "Transpose" }.count }
            XCTAssertEqual(transposes(plain) - transposes(optimized), fused, "\(fixture.name): one Transpose removed per folded operand")
            fusedSomewhere = fusedSomewhere || fused > 0
            let swish = optimized.nodes.filter { $0.opType == "QuickGelu" }.count
            XCTAssertEqual(plain.nodes.filter { $0.opType == "Sigmoid" }.count - optimized.nodes.filter { $0.opType == "Sigmoid" }.count,
                           swish, "\(fixture.name): one Sigmoid removed per QuickGelu")
            swishSomewhere = swishSomewhere || swish > 0
            assertClose(try XCTUnwrap(optimized.run(inputs)["logits"]), try XCTUnwrap(plain.run(inputs)["logits"]),
                        relative: 1e-5, absolute: 1e-5, fixture.name)
        }
        XCTAssert(fusedSomewhere, "attention's Q·Kᵀ should be fused in some fixture")
        XCTAssert(swishSomewhere, "Llama's SiLU should become QuickGelu in some fixture")
    }
}
