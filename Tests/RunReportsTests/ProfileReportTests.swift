import Foundation
import XCTest

@testable import RunReports

/// The `bench --profile-report` page: rows merged from an op profile's keys, bars proportional to the times.
final class ProfileReportTests: XCTestCase {
    func testRowsMergeForwardAndBackwardAndBarsFollowTheTimes() throws {
        let report = ProfileReport(
            title: "bench train", facts: [("model", "m.onnx")],
            seconds: ["MatMul": 0.3, "MatMul (backward)": 0.5, "Softmax": 0.2, "Softmax (backward)": 0.1, "Shape": 0.05],
            calls: ["MatMul": 12, "MatMul (backward)": 12, "Softmax": 2, "Softmax (backward)": 2, "Shape": 7])
        XCTAssertEqual(report.rows.map(\.op), ["MatMul", "Softmax", "Shape"])
        XCTAssertEqual(report.rows.map(\.calls), [12, 2, 7])
        XCTAssertEqual(report.rows[0].forward, 0.3)
        XCTAssertEqual(report.rows[0].backward, 0.5)

        // The slowest op (0.8 s) spans 180...680: 625 units per second.
        let svg = report.svg
        func rect(_ kind: String, _ op: String) throws -> (x: Double, width: Double) {
            let line = try XCTUnwrap(svg.split(separator: "\n").first { $0.contains("class=\"bar \(kind)\" data-op=\"\(op)\"") })
            func attribute(_ name: String) throws -> Double {
                try XCTUnwrap(Double(line.components(separatedBy: " \(name)=\"")[1].prefix { $0 != "\"" }))
            }
            return (try attribute("x"), try attribute("width"))
        }
        XCTAssertEqual(try rect("forward", "MatMul").x, 180)
        XCTAssertEqual(try rect("forward", "MatMul").width, 187.5, accuracy: 0.006)
        XCTAssertEqual(try rect("backward", "MatMul").x, 367.5, accuracy: 0.006)
        XCTAssertEqual(try rect("backward", "MatMul").width, 312.5, accuracy: 0.006)
        XCTAssertEqual(try rect("forward", "Softmax").width, 125, accuracy: 0.006)
        XCTAssertEqual(try rect("backward", "Softmax").width, 62.5, accuracy: 0.006)
        XCTAssertEqual(try rect("forward", "Shape").width, 31.25, accuracy: 0.006)
        XCTAssertFalse(svg.contains("class=\"bar backward\" data-op=\"Shape\""))
        XCTAssertTrue(svg.contains("800.0 ms · 69.6% · 12 calls"))
        XCTAssertFalse(report.html.contains("<script"))
    }
}
