import Foundation
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
