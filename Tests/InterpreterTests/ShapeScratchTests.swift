import Foundation
@testable import Interpreter
import ONNXGraph
import TestSupport
import XCTest

// TEMPORARY: large-shape (parallel path) and error checks for the data-movement ops. Delete before finishing.
final class ShapeScratchTests: XCTestCase {
    func node(_ op: String, _ attributes: [String: Attribute] = [:], outputs: Int = 1) -> Node {
        Node(name: "n", opType: op, inputs: ["a", "b"], outputs: (0..<outputs).map { "y\($0)" }, attributes: attributes)
    }

    func random(_ shape: [Int], seed: Int) -> Tensor {
        var state = UInt64(seed) &* 6364136223846793005 &+ 1442695040888963407
        let values = (0..<shape.reduce(1, *)).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 1000) / 7
        }
        return Tensor(shape: shape, floats: values)
    }

    func ints(_ values: [Int]) -> Tensor { Tensor(shape: [values.count], int64s: values.map { Int64($0) }) }

    func naiveTranspose(_ x: Tensor, _ perm: [Int]) -> Tensor {
        let shape = perm.map { x.shape[$0] }
        let inStrides = contiguousStrides(x.shape)
        let outStrides = contiguousStrides(shape)
        var out = [Float](repeating: 0, count: x.count)
        let values = x.floats
        for linear in 0..<x.count {
            var source = 0
            for axis in 0..<shape.count { source += (linear / outStrides[axis]) % shape[axis] * inStrides[perm[axis]] }
            out[linear] = values[source]
        }
        return Tensor(shape: shape, floats: out)
    }

    func testTransposeLargeAndRandom() throws {
        for (shape, perm) in [([4, 128, 9, 64], [0, 2, 1, 3]), ([4, 9, 128, 64], [0, 1, 3, 2]), ([300, 257], [1, 0]),
                              ([3, 70, 50, 33], [2, 0, 3, 1])] {
            let x = random(shape, seed: shape.count)
            let op = try Transpose(node: node("Transpose", ["perm": .ints(perm)]), version: 13)
            let start = Date()
            let y = try op.run([x])[0]
            print("transpose \(shape) \(perm): \(Date().timeIntervalSince(start) * 1000) ms")
            assertClose(y, naiveTranspose(x, perm), relative: 0, absolute: 0)
        }
        var generator = SystemRandomNumberGenerator()
        for trial in 0..<200 {
            let rank = Int.random(in: 1...5, using: &generator)
            var shape: [Int] = []
            for _ in 0..<rank {
                let unit = Int.random(in: 0...6, using: &generator) == 0
                shape.append(unit ? 1 : Int.random(in: 1...7, using: &generator))
            }
            let perm = Array(0..<rank).shuffled(using: &generator)
            let x = random(shape, seed: trial)
            let y = try Transpose(node: node("Transpose", ["perm": .ints(perm)]), version: 21).run([x])[0]
            assertClose(y, naiveTranspose(x, perm), relative: 0, absolute: 0, "\(shape) \(perm)")
        }
    }

    func testLargeGatherConcatExpandSlice() throws {
        let table = random([5000, 576], seed: 3)
        var ids: [Int64] = []
        for position in 0..<512 {
            let id = (position * 7919) % 5000
            ids.append(Int64(position % 3 == 0 ? id - 5000 : id))
        }
        let gathered = try Gather(node: node("Gather"), version: 13).run([table, Tensor(shape: [4, 128], int64s: ids)])[0]
        XCTAssertEqual(gathered.shape, [4, 128, 576])
        let tableValues = table.floats, gatheredValues = gathered.floats
        for (position, id) in ids.enumerated() {
            let row = Int(id < 0 ? id + 5000 : id)
            XCTAssertEqual(Array(gatheredValues[(position * 576)..<((position + 1) * 576)]),
                           Array(tableValues[(row * 576)..<((row + 1) * 576)]))
        }

        let past = random([4, 3, 100, 64], seed: 4), new = random([4, 3, 28, 64], seed: 5)
        let joined = try Concat(node: node("Concat", ["axis": .int(-2)]), version: 13).run([past, new])[0]
        XCTAssertEqual(joined.shape, [4, 3, 128, 64])
        // Slicing the joined cache back apart gives the operands.
        let slice = try Slice(node: node("Slice"), version: 13)
        assertClose(try slice.run([joined, ints([0]), ints([100]), ints([2])])[0], past, relative: 0, absolute: 0)
        assertClose(try slice.run([joined, ints([100]), ints([Int.max]), ints([-2])])[0], new, relative: 0, absolute: 0)
        let parts = try Split(node: node("Split", ["axis": .int(2)], outputs: 2), version: 13)
            .run([joined, ints([100, 28])])
        assertClose(parts[0], past, relative: 0, absolute: 0)
        assertClose(parts[1], new, relative: 0, absolute: 0)

        // Reversing twice along two axes is the identity.
        let reverse = [joined, ints([-1, -1]), ints([Int.min, Int.min]), ints([1, 3]), ints([-1, -1])]
        let reversed = try slice.run(reverse)
        XCTAssertNotEqual(reversed[0].floats, joined.floats)
        var again = reverse
        again[0] = reversed[0]
        assertClose(try slice.run(again)[0], joined, relative: 0, absolute: 0)

        let row = random([1, 1, 1, 64], seed: 6)
        let expanded = try Expand(node: node("Expand"), version: 13).run([row, ints([4, 3, 128, 1])])[0]
        XCTAssertEqual(expanded.shape, [4, 3, 128, 64])
        let rowValues = row.floats
        XCTAssert(expanded.floats.enumerated().allSatisfy { $0.element == rowValues[$0.offset % 64] })
        let column = random([128, 1], seed: 7)
        let widened = try Expand(node: node("Expand"), version: 13).run([column, ints([4, 1, 600])])[0]
        let columnValues = column.floats
        XCTAssert(widened.floats.enumerated().allSatisfy { $0.element == columnValues[($0.offset / 600) % 128] })
    }

    func testErrorsAreThrownNotCrashes() throws {
        let x = random([2, 3, 4], seed: 1)
        let reshape = try Reshape(node: node("Reshape"), version: 14)
        assertThrows(["[2, 3, 4]", "[5, -1]"]) { try reshape.run([x, ints([5, -1])]) }
        assertThrows(["more than one -1"]) { try reshape.run([x, ints([-1, -1])]) }
        assertThrows(["[7, 2]", "24"]) { try reshape.run([x, ints([7, 2])]) }
        assertThrows(["0 at position 3"]) { try reshape.run([x, ints([0, 0, 0, 0])]) }
        assertThrows(["index 3", "[2, 3, 4]"]) { try Gather(node: node("Gather", ["axis": .int(1)]), version: 13).run([x, ints([3])]) }
        assertThrows(["index -4"]) { try Gather(node: node("Gather", ["axis": .int(1)]), version: 13).run([x, ints([-4])]) }
        assertThrows(["axis 3", "[2, 3, 4]"]) { try Gather(node: node("Gather", ["axis": .int(3)]), version: 13).run([x, ints([0])]) }
        assertThrows(["[2, 3, 4]", "[2, 2, 4]"]) {
            try Concat(node: node("Concat", ["axis": .int(0)]), version: 13).run([x, random([2, 2, 4], seed: 2)])
        }
        assertThrows(["[2, 3, 4]", "[3, 4]"]) {
            try Concat(node: node("Concat", ["axis": .int(0)]), version: 13).run([x, random([3, 4], seed: 2)])
        }
        assertThrows(["axis"]) { try Concat(node: node("Concat"), version: 13) }
        assertThrows(["axis 0", "[]"]) {
            try Concat(node: node("Concat", ["axis": .int(0)]), version: 13).run([Tensor(scalar: Float(1))])
        }
        assertThrows(["perm", "[0, 2]"]) { try Transpose(node: node("Transpose", ["perm": .ints([0, 2])]), version: 13) }
        assertThrows(["perm", "[2, 3, 4]"]) {
            try Transpose(node: node("Transpose", ["perm": .ints([1, 0])]), version: 13).run([x])
        }
        assertThrows(["value_string"]) { try Constant(node: node("Constant", ["value_string": .string("hi")]), version: 13) }
        assertThrows(["sparse_value"]) { try Constant(node: node("Constant", ["sparse_value": .unsupported(kind: "sparse_tensor")]), version: 13) }
        assertThrows(["exactly one"]) { try Constant(node: node("Constant"), version: 13) }
        assertThrows(["exactly one"]) { try Constant(node: node("Constant", ["value_int": .int(1), "value_float": .float(1)]), version: 13) }
        let split = try Split(node: node("Split", outputs: 2), version: 13)
        assertThrows(["[1, 2]", "sum to 2"]) { try split.run([x, ints([1, 2])]) }
        assertThrows(["equal parts"]) { try Split(node: node("Split", outputs: 2), version: 13).run([random([3], seed: 1)]) }
        assertThrows(["num_outputs"]) { try Split(node: node("Split", ["num_outputs": .int(2)], outputs: 3), version: 18) }
        assertThrows(["[0, 2]", "[2, 3, 4]"]) { try Squeeze(node: node("Squeeze"), version: 13).run([x, ints([0, 2])]) }
        assertThrows(["[0, 0]"]) { try Unsqueeze(node: node("Unsqueeze"), version: 13).run([x, ints([0, 0])]) }
        assertThrows(["[5]"]) { try Unsqueeze(node: node("Unsqueeze"), version: 13).run([x, ints([5])]) }
        assertThrows(["repeat"]) { try Slice(node: node("Slice"), version: 13).run([x, ints([0, 0]), ints([1, 1]), ints([1, -2])]) }
        assertThrows(["contain 0"]) { try Slice(node: node("Slice"), version: 13).run([x, ints([0]), ints([1]), ints([1]), ints([0])]) }
        assertThrows(["Slice axis 3"]) { try Slice(node: node("Slice"), version: 13).run([x, ints([0]), ints([1]), ints([3])]) }
        assertThrows(["Slice axis 0", "[]"]) { try Slice(node: node("Slice"), version: 13).run([Tensor(scalar: Float(1)), ints([0]), ints([1])]) }
        assertThrows(["cannot be broadcast"]) { try Expand(node: node("Expand"), version: 13).run([x, ints([5, 1])]) }
        assertThrows(["zero"]) { try RangeOperator(node: node("Range"), version: 11).run([Tensor(scalar: Int64(0)), Tensor(scalar: Int64(3)), Tensor(scalar: Int64(0))]) }
        assertThrows(["finite"]) { try RangeOperator(node: node("Range"), version: 11).run([Tensor(scalar: Float(0)), Tensor(scalar: Float.nan), Tensor(scalar: Float(1))]) }
        assertThrows(["more than"]) { try RangeOperator(node: node("Range"), version: 11).run([Tensor(scalar: Int64(-1) << 40), Tensor(scalar: Int64(1) << 40), Tensor(scalar: Int64(1))]) }
        assertThrows(["overflows"]) { try RangeOperator(node: node("Range"), version: 11).run([Tensor(scalar: Int64.min), Tensor(scalar: Int64.max), Tensor(scalar: Int64(1))]) }
        let top = try RangeOperator(node: node("Range"), version: 11)
            .run([Tensor(scalar: Int64.max - 5), Tensor(scalar: Int64.max), Tensor(scalar: Int64(4))])[0]
        XCTAssertEqual(top.int64s, [Int64.max - 5, Int64.max - 1])
        assertThrows(["GatherND", "[2, 3, 4]"]) { try GatherND(node: node("GatherND"), version: 13).run([x, Tensor(shape: [1, 4], int64s: [0, 0, 0, 0])]) }
        assertThrows(["index 2", "axis 0"]) { try GatherND(node: node("GatherND"), version: 13).run([x, Tensor(shape: [1, 1], int64s: [2])]) }
        assertThrows(["Flatten axis 4"]) { try Flatten(node: node("Flatten", ["axis": .int(4)]), version: 13).run([x]) }
        assertThrows(["[-1]"]) { try ConstantOfShape(node: node("ConstantOfShape"), version: 9).run([ints([-1])]) }
        assertThrows(["float32", "int64"]) { try Concat(node: node("Concat", ["axis": .int(0)]), version: 13).run([x, Tensor(shape: [1, 3, 4], int64s: .init(repeating: 0, count: 12))]) }
        // The scalar / flatten edge cases.
        XCTAssertEqual(try Flatten(node: node("Flatten", ["axis": .int(0)]), version: 13).run([Tensor(scalar: Float(2))])[0].shape, [1, 1])
        XCTAssertEqual(try Transpose(node: node("Transpose"), version: 13).run([Tensor(scalar: Float(2))])[0].shape, [])
        XCTAssertEqual(try Expand(node: node("Expand"), version: 13).run([Tensor(scalar: Float(2)), ints([])])[0].shape, [])
    }
}
