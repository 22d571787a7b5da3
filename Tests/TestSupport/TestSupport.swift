import Foundation
import ONNXGraph
import XCTest

/// The repository's root folder, found from this file's path (tests read fixtures in place, not as resources).
public let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A path below the repository root.
public func repositoryPath(_ relative: String) -> String {
    repositoryRoot.appendingPathComponent(relative).path
}

/// A path below `fixtures/`, the one folder that holds every committed fixture and reference (README, "Layout").
public func fixturePath(_ relative: String) -> String {
    repositoryPath("fixtures/\(relative)")
}

/// A new empty temporary folder, removed when the test ends.
public func temporaryDirectory(for testCase: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("onnx-dpo-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

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

/// One exported model of `fixtures/models/fixtures.json` (made by `tools/make_fixtures.py`), with the batch it was run on.
public struct ExportFixture: Decodable, Sendable {
    public var name: String
    public var path: String
    public var architecture: String
    public var exporter: String
    public var opset: Int
    public var external_data: Bool

    /// Every committed export.
    public static func all() throws -> [ExportFixture] {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("models/fixtures.json")))
        return try JSONDecoder().decode([ExportFixture].self, from: data)
    }

    /// The export called `name`.
    public static func named(_ name: String) throws -> ExportFixture {
        guard let fixture = try all().first(where: { $0.name == name }) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "no fixture named \(name)"])
        }
        return fixture
    }

    /// The folder holding the model and its reference data.
    public var folder: String { (repositoryPath(path) as NSString).deletingLastPathComponent }

    public func model() throws -> Model { try Model.load(path: repositoryPath(path)) }

    /// `input_ids` and `attention_mask` of the reference batch (batch 2, right padding).
    public func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }

    /// torch's logits for `inputs()`.
    public func torchLogits() throws -> Tensor {
        guard let logits = try NPZ.read(path: "\(folder)/torch_logits.npz")["logits"] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(folder)/torch_logits.npz has no logits"])
        }
        return logits
    }
}
