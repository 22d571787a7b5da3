import Foundation
import XCTest

@testable import RunReports

/// CRC32C, TFRecord framing and the Event protobufs, against bytes written by TensorBoard's own Python code
/// (`tensorboard` 2.21: `masked_crc32c`, `event_pb2.Event.SerializeToString`, `text_summary_v2.text_pb`).
final class TensorBoardTests: XCTestCase {
    func testCRC32CKnownVectors() {
        // RFC 3720 appendix B.4, and the check value of the CRC catalogue.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }), 0x113F_DB5C)
        XCTAssertEqual(CRC32C.masked([UInt8]()), 0xA282_EAD8)
        XCTAssertEqual(CRC32C.masked(Array("123456789".utf8)), 0xC78A_B0E5)
    }

    func testRecordFramingMatchesTensorBoard() {
        let record = TFRecord.frame(Data("hello".utf8))
        XCTAssertEqual([UInt8](record), [5, 0, 0, 0, 0, 0, 0, 0, 234, 178, 4, 62, 104, 101, 108, 108, 111, 187, 31, 28, 25])
    }

    func testRecordsReadBackUpToATornTail() {
        let payloads = [Data("first".utf8), Data(), Data(repeating: 7, count: 300)]
        let file = payloads.reduce(into: Data()) { $0.append(TFRecord.frame($1)) }
        XCTAssertEqual(TFRecord.records(in: file), payloads)
        // A writer killed anywhere inside the last record leaves the records before it readable.
        let lastStart = file.count - TFRecord.frame(payloads[2]).count
        for cut in lastStart..<file.count {
            XCTAssertEqual(TFRecord.records(in: file.prefix(cut)), Array(payloads.prefix(2)), "cut at \(cut)")
        }
        var corrupted = file
        corrupted[lastStart + 20] ^= 1
        XCTAssertEqual(TFRecord.records(in: corrupted), Array(payloads.prefix(2)))
    }

    private func temporaryFolder() throws -> String {
        let folder = (NSTemporaryDirectory() as NSString).appendingPathComponent("runreports-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        return folder
    }

    func testEventsMatchTensorBoardsSerialisation() throws {
        let folder = try temporaryFolder()
        let writer = try TensorBoardWriter(folder: folder, keepingStepsThrough: 0, now: Date(timeIntervalSince1970: 2))
        try writer.addScalars([(tag: "train/loss", value: 0.25)], step: 3, wallTime: Date(timeIntervalSince1970: 1.5))
        try writer.addText(tag: "args", markdown: "| a | b |", step: 0, wallTime: Date(timeIntervalSince1970: 2))
        let records = TFRecord.records(in: try Data(contentsOf: URL(fileURLWithPath: writer.path)))
        XCTAssertEqual(records.map { [UInt8]($0) }, [
            [9, 0, 0, 0, 0, 0, 0, 0, 64, 26, 13, 98, 114, 97, 105, 110, 46, 69, 118, 101, 110, 116, 58, 50],
            [9, 0, 0, 0, 0, 0, 0, 248, 63, 16, 3, 42, 19, 10, 17, 10, 10, 116, 114, 97, 105, 110, 47, 108, 111, 115,
             115, 21, 0, 0, 128, 62],
            [9, 0, 0, 0, 0, 0, 0, 0, 64, 42, 35, 10, 33, 10, 4, 97, 114, 103, 115, 66, 15, 8, 7, 18, 0, 66, 9, 124, 32,
             97, 32, 124, 32, 98, 32, 124, 74, 8, 10, 6, 10, 4, 116, 101, 120, 116],
        ])
        XCTAssertTrue((writer.path as NSString).lastPathComponent.hasPrefix("events.out.tfevents.0000000002."))
    }

    func testResumeDropsTheKilledSessionsLaterStepsAndMarksTheRestart() throws {
        let folder = try temporaryFolder()
        let first = try TensorBoardWriter(folder: folder, keepingStepsThrough: 0, now: Date(timeIntervalSince1970: 100))
        for step in 1...6 { try first.addScalars([(tag: "train/loss", value: Double(step))], step: step) }
        // Killed mid-record: half of a seventh step.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: first.path))
        try handle.seekToEnd()
        try handle.write(contentsOf: TFRecord.frame(Data(repeating: 1, count: 40)).prefix(30))
        try handle.close()

        // Resumed from the checkpoint at step 4, in the same second as the first session began.
        let second = try TensorBoardWriter(folder: folder, keepingStepsThrough: 4, now: Date(timeIntervalSince1970: 100))
        XCTAssertEqual(try TensorBoardWriter.eventFiles(in: folder), [first.path, second.path])
        XCTAssertEqual(try TensorBoardWriter.events(inFile: first.path).map(\.step), [0, 1, 2, 3, 4])
        let resumed = try TensorBoardWriter.events(inFile: second.path)
        XCTAssertEqual(resumed.map(\.step), [0, 5])
        XCTAssertEqual([UInt8](resumed[1].data.suffix(4)), [58, 2, 8, 1], "SessionLog { status: START } at field 7")

        // A fresh run in the same folder starts the curves over.
        let fresh = try TensorBoardWriter(folder: folder, keepingStepsThrough: 0, now: Date(timeIntervalSince1970: 50))
        XCTAssertEqual(try TensorBoardWriter.eventFiles(in: folder), [fresh.path])
    }

    func testTagsFollowTransformersTensorBoardCallback() {
        XCTAssertEqual(TensorBoardWriter.tag(forMetric: "loss"), "train/loss")
        XCTAssertEqual(TensorBoardWriter.tag(forMetric: "rewards/margins"), "train/rewards/margins")
        XCTAssertEqual(TensorBoardWriter.tag(forMetric: "eval_rewards/accuracies"), "eval/rewards/accuracies")
        XCTAssertNil(TensorBoardWriter.tag(forMetric: "step"))
    }
}
