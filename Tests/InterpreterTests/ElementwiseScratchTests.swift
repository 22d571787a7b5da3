import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

final class ElementwiseScratchTests: XCTestCase {
    func op(_ type: String, opset: Int = 21, _ attributes: [String: Attribute] = [:]) throws -> any Operator {
        let node = Node(name: "n", opType: type, inputs: [], outputs: ["y"], attributes: attributes)
        switch OperatorRegistry.standard.resolve(node, opsets: ["": opset]) {
        case .success(let (type, version)): return try type.init(node: node, version: version)
        case .failure(let error): throw error
        }
    }

    func testErrors() throws {
        let f = Tensor(shape: [2], floats: [1, 2]), i = Tensor(shape: [2], int64s: [1, 0])
        assertThrows(["float32", "int64"]) { try self.op("Add").run([f, i]) }
        assertThrows(["division by zero"]) { try self.op("Div").run([i, i]) }
        assertThrows(["approximate"]) { try self.op("Gelu", ["approximate": .string("fast")]) }
        assertThrows(["to", "string"]) { try self.op("Cast", ["to": .int(8)]) }
        assertThrows(["to", "99"]) { try self.op("Cast", ["to": .int(99)]) }
        assertThrows(["to", "required"]) { try self.op("Cast") }
        assertThrows(["cannot be broadcast"]) { try self.op("Mul").run([f, Tensor(shape: [3], floats: [1, 2, 3])]) }
        assertThrows(["negative power"]) { try self.op("Pow").run([i, Tensor(shape: [], int64s: [-1])]) }
        assertThrows(["axes"]) { try self.op("ReduceMean", opset: 13, ["axes": .ints([0, -1])]).run([f]) }
        assertThrows(["bool"]) { try self.op("Where").run([f, f, f]) }
        // Int64.min / -1 wraps instead of trapping.
        let wrapped = try op("Div").run([Tensor(shape: [], int64s: [.min]), Tensor(shape: [], int64s: [-1])])[0]
        XCTAssertEqual(wrapped.int64s, [.min])
        // uint64 compares unsigned.
        let big = Tensor(shape: [1], int64s: [-1], dataType: .uint64), one = Tensor(shape: [1], int64s: [1], dataType: .uint64)
        XCTAssertEqual(try op("Greater").run([big, one])[0].bools, [true])
        XCTAssertEqual(try op("Max").run([big, one])[0].int64s, [-1])
        XCTAssertEqual(try op("Div").run([big, Tensor(shape: [1], int64s: [2], dataType: .uint64)])[0].int64s, [Int64.max])
        // NaN / huge to int.
        let odd = Tensor(shape: [3], floats: [.nan, 1e30, -1e30])
        XCTAssertEqual(try op("Cast", ["to": .int(7)]).run([odd])[0].int64s, [.min, .min, .min])
        XCTAssertEqual(try op("Cast", ["to": .int(13)]).run([Tensor(shape: [1], floats: [1e19])])[0].int64s,
                       [Int64(bitPattern: UInt64(Float(1e19)))])
    }

    func testBFloat16() throws {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even (1). 1 + 3·2^-8 rounds up to 1 + 2^-6.
        let x = Tensor(shape: [5], floats: [1 + 0x1p-8, 1 + 3 * 0x1p-8, 3.14159, .nan, -65504.7])
        let y = try op("Cast", ["to": .int(16)]).run([x])[0]
        XCTAssertEqual(y.dataType, .bfloat16)
        XCTAssertEqual(y.floats[0], 1)
        XCTAssertEqual(y.floats[1], 1 + 0x1p-6)
        XCTAssertEqual(y.floats[2], 3.140625)
        XCTAssert(y.floats[3].isNaN)
        XCTAssertEqual(y.floats[4], -65536)
        let sum = try op("Add").run([y, y])[0]
        XCTAssertEqual(sum.dataType, .bfloat16)
        let back = try op("Cast", ["to": .int(1)]).run([y])[0]
        XCTAssertEqual(back.dataType, .float)
        XCTAssertEqual(back.floats[2], 3.140625)
    }

    func time(_ label: String, _ body: () throws -> Void) rethrows {
        try body()
        let start = Date()
        let repeats = 20
        for _ in 0..<repeats { try body() }
        print(String(format: "BENCH %@: %.3f ms", label, Date().timeIntervalSince(start) * 1000 / Double(repeats)))
    }

    func testBenchmark() throws {
        let n = 512 * 1536
        let big = Tensor(shape: [1, 512, 1536], floats: (0..<n).map { Float($0 % 97) * 0.01 - 0.3 })
        let row = Tensor(shape: [1536], floats: (0..<1536).map { Float($0) * 0.001 })
        let scalar = Tensor(scalar: Float(2))
        try time("Add same") { _ = try op("Add").run([big, big]) }
        try time("Mul row") { _ = try op("Mul").run([big, row]) }
        try time("Pow 2") { _ = try op("Pow").run([big, scalar]) }
        try time("Sigmoid") { _ = try op("Sigmoid").run([big]) }
        try time("Gelu") { _ = try op("Gelu").run([big]) }
        try time("Tanh") { _ = try op("Tanh").run([big]) }
        try time("ReduceMean last") { _ = try op("ReduceMean").run([big, Tensor(shape: [1], int64s: [-1])]) }
        try time("ReduceMean first") { _ = try op("ReduceMean").run([big.reshaped([512, 1536]), Tensor(shape: [1], int64s: [0])]) }
        try time("Softmax last") { _ = try op("Softmax").run([big.reshaped([1536, 512])]) }
        let scores = Tensor(shape: [9, 512, 512], floats: (0..<(9 * 512 * 512)).map { Float($0 % 101) * 0.05 })
        try time("Softmax scores") { _ = try op("Softmax").run([scores]) }
        try time("Softmax axis1") { _ = try op("Softmax", ["axis": .int(1)]).run([scores]) }
        try time("LayerNorm") { _ = try op("LayerNormalization").run([big, row, row]) }
        let mask = Tensor(shape: [512, 512], bools: (0..<(512 * 512)).map { $0 % 513 < 300 })
        try time("Where mask") { _ = try op("Where").run([mask, scores, Tensor(scalar: -Float.infinity)]) }
        try time("Cast f16") { _ = try op("Cast", ["to": .int(10)]).run([big]) }
    }
}
