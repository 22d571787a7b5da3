import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Every writer goes through `AtomicFile`: the destination holds the old file or the new one, never a part, and
/// nothing temporary is left behind.
final class AtomicFileTests: XCTestCase {
    func testWriteReplacesAndLeavesNoTemporaryFile() throws {
        let folder = try temporaryDirectory(for: self)
        let path = folder.appendingPathComponent("file.bin").path
        try AtomicFile.write(Data("old".utf8), to: path)
        try AtomicFile.write(Data("new".utf8), to: path)
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("new".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["file.bin"])
    }

    func testAFailedWriteKeepsTheOldFileAndRemovesTheTemporaryOne() throws {
        let folder = try temporaryDirectory(for: self)
        let path = folder.appendingPathComponent("file.bin").path
        try AtomicFile.write(Data("old".utf8), to: path)
        struct Interrupted: Error {}
        assertThrows(["cannot write", "file.bin", "interrupted"]) {
            try AtomicFile.write(to: path) { (temporary) throws(GraphError) in
                FileManager.default.createFile(atPath: temporary, contents: Data("half".utf8))
                throw GraphError.cannotWrite(path: path, reason: "interrupted")
            }
        }
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data("old".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["file.bin"])
    }

    func testFoldersAndMissingFoldersAreRefused() throws {
        let folder = try temporaryDirectory(for: self)
        assertThrows(["it is a folder"]) { try AtomicFile.write(Data(), to: folder.path) }
        assertThrows(["does not exist"]) { try AtomicFile.write(Data(), to: folder.appendingPathComponent("no/such/file").path) }
    }

    func testReplaceFolderSwapsAWholeFolder() throws {
        let root = try temporaryDirectory(for: self)
        let final = root.appendingPathComponent("checkpoint-2").path
        for generation in ["first", "second"] {
            let temporary = root.appendingPathComponent(".checkpoint-2.tmp").path
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
            try AtomicFile.write(Data(generation.utf8), to: "\(temporary)/state")
            try AtomicFile.replaceFolder(at: final, with: temporary)
            XCTAssertEqual(FileManager.default.contents(atPath: "\(final)/state"), Data(generation.utf8))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["checkpoint-2"],
                       "the old folder and the temporary one are gone")
    }
}
