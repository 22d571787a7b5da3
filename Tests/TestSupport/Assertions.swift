import Foundation
import ONNXGraph
import XCTest

/// Why `actual` differs from `expected` beyond `|a - e| <= absolute + relative·|e|`, or nil when it does not.
/// Types and shapes must match exactly; integer and bool values exactly; NaNs must be NaN in both.
public func closenessProblem(_ actual: Tensor, _ expected: Tensor, relative: Float, absolute: Float) -> String? {
    guard actual.shape == expected.shape else { return "shape \(actual.shape), expected \(expected.shape)" }
    guard actual.dataType == expected.dataType else { return "type \(actual.dataType), expected \(expected.dataType)" }
    var mismatches: [String] = []
    var count = 0
    var maxDifference: Float = 0
    switch (actual.storage, expected.storage) {
    case (.float(let a), .float(let e)):
        for index in a.indices {
            let difference = abs(a[index] - e[index])
            let bothNaN = a[index].isNaN && e[index].isNaN
            let equalInfinity = a[index].isInfinite && a[index] == e[index]
            if bothNaN || equalInfinity { continue }
            if difference.isNaN || difference > absolute + relative * abs(e[index]) {
                count += 1
                if mismatches.count < 5 { mismatches.append("[\(index)] \(a[index]) vs \(e[index])") }
            }
            if !difference.isNaN { maxDifference = max(maxDifference, difference) }
        }
    case (.bytes(let a), .bytes(let e)):
        for index in a.indices where a[index] != e[index] {
            count += 1
            if mismatches.count < 5 { mismatches.append("[\(index)] \(a[index]) vs \(e[index])") }
        }
    case (.int64(let a), .int64(let e)):
        for index in a.indices where a[index] != e[index] {
            count += 1
            if mismatches.count < 5 { mismatches.append("[\(index)] \(a[index]) vs \(e[index])") }
        }
    case (.bool(let a), .bool(let e)):
        for index in a.indices where a[index] != e[index] {
            count += 1
            if mismatches.count < 5 { mismatches.append("[\(index)] \(a[index]) vs \(e[index])") }
        }
    default:
        return "storage \(actual.storage.kind), expected \(expected.storage.kind)"
    }
    guard count > 0 else { return nil }
    return "\(count) of \(actual.count) values differ (max |difference| \(maxDifference)); first: "
        + mismatches.joined(separator: ", ")
}

/// Fails the test when `actual` is not within `absolute + relative·|expected|` of `expected`, printing the first
/// few differing values and the largest difference.
public func assertClose(
    _ actual: Tensor, _ expected: Tensor, relative: Float = 1e-5, absolute: Float = 1e-6,
    _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line
) {
    if let problem = closenessProblem(actual, expected, relative: relative, absolute: absolute) {
        XCTFail("\(message()) \(problem)", file: file, line: line)
    }
}

/// Asserts two float tensors have the same shape, declared type and bits (no tolerance).
public func assertBitIdentical(_ actual: Tensor?, _ expected: Tensor?, _ message: String, file: StaticString = #filePath,
                               line: UInt = #line) {
    guard let actual, let expected else { return XCTFail("\(message): missing tensor", file: file, line: line) }
    XCTAssertEqual(actual.shape, expected.shape, message, file: file, line: line)
    XCTAssertEqual(actual.dataType, expected.dataType, message, file: file, line: line)
    XCTAssertEqual(actual.floats.map(\.bitPattern), expected.floats.map(\.bitPattern), message, file: file, line: line)
}

/// Asserts that `body` throws an error whose description contains every one of `fragments`.
public func assertThrows<T>(
    _ fragments: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T
) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch {
        let text = "\(error)"
        for fragment in fragments where !text.contains(fragment) {
            XCTFail("error does not mention '\(fragment)': \(text)", file: file, line: line)
        }
    }
}

/// Max |logits − reference| over real-token positions (`mask` = 1) of `[batch, length, vocabulary]` logits: padded
/// rows may attend to nothing, and what they hold is no model's answer.
public func maxDifferenceAtRealTokens(_ logits: Tensor, _ reference: Tensor, mask: Tensor) -> Float {
    let vocabulary = logits.shape[2]
    let ours = logits.floats, theirs = reference.floats, real = mask.int64s
    var worst: Float = 0
    for position in real.indices where real[position] == 1 {
        for index in (position * vocabulary)..<((position + 1) * vocabulary) {
            worst = max(worst, abs(ours[index] - theirs[index]))
        }
    }
    return worst
}
