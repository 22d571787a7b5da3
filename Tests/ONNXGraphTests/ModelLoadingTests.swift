import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// The importer: every element type, raw and typed storage, node metadata, and unknown fields kept for export.
final class ModelLoadingTests: XCTestCase {
    static let fixtures = fixturePath("graph")

    func testEveryElementTypeLoadsFromRawDataAndTypedFields() throws {
        let model = try Model.load(path: "\(Self.fixtures)/dtypes.onnx")
        XCTAssertEqual(model.irVersion, 8)
        XCTAssertEqual(model.opset, 17)
        let signed: [Int64] = [-2, -1, 0, 1, 2, 3], unsigned: [Int64] = [0, 1, 2, 3, 4, 5]
        let expected: [String: Tensor] = [
            "float32": Tensor(shape: [6], floats: [-2, -1, 0, 1, 2, 0.333251953125]),
            "float64": Tensor(shape: [6], floats: [-2, -1, 0, 1, 2, 0.333251953125], dataType: .double),
            "float16": Tensor(shape: [6], floats: [-2, -1, 0, 1, 2, 0.333251953125], dataType: .float16),
            "bfloat16": Tensor(shape: [6], floats: [-2, -1, 0, 1, 2, 0.333984375], dataType: .bfloat16),
            "int8": Tensor(shape: [6], int64s: signed, dataType: .int8),
            "uint8": Tensor(shape: [6], int64s: unsigned, dataType: .uint8),
            "int16": Tensor(shape: [6], int64s: signed, dataType: .int16),
            "uint16": Tensor(shape: [6], int64s: unsigned, dataType: .uint16),
            "int32": Tensor(shape: [6], int64s: signed, dataType: .int32),
            "uint32": Tensor(shape: [6], int64s: unsigned, dataType: .uint32),
            "int64": Tensor(shape: [6], int64s: signed),
            "uint64": Tensor(shape: [6], int64s: unsigned, dataType: .uint64),
            "bool": Tensor(shape: [6], bools: [false, true, false, true, true, false]),
        ]
        XCTAssertEqual(model.graph.initializers.count, 2 * expected.count)
        for initializer in model.graph.initializers {
            let label = String(initializer.name.split(separator: "_", maxSplits: 1)[1])
            let reference = try XCTUnwrap(expected[label], initializer.name)
            let tensor = try model.loadTensor(initializer)
            XCTAssertEqual(initializer.dataType, reference.dataType, initializer.name)
            assertClose(tensor, reference, relative: 0, absolute: 0, initializer.name)
        }
    }

    func testGraphStructureIsRead() throws {
        let model = try Model.load(path: "\(Self.fixtures)/dtypes.onnx")
        XCTAssertEqual(model.graph.runtimeInputs.map(\.name), ["x"])
        XCTAssertEqual(model.graph.inputs.first?.typeDescription, "float32[6]")
        XCTAssertEqual(model.graph.outputs.map(\.name), ["y"])
        let node = try XCTUnwrap(model.graph.nodes.first)
        XCTAssertEqual(node.opType, "Add")
        XCTAssertEqual(node.name, "add")
        XCTAssertEqual(node.inputs, ["x", "raw_float32"])
        XCTAssertEqual(model.runONNXChecker(), .passed)
    }

    func testNodeMetadataPropsNewerThanONNX112AreReadAndSurviveReserialization() throws {
        let path = "\(Self.fixtures)/bad/node_metadata.onnx"
        let model = try Model.load(path: path)
        let node = try XCTUnwrap(model.graph.nodes.first)
        XCTAssertEqual(node.name, "add0")
        XCTAssertEqual(node.metadata["pkg.torch.onnx.name_scopes"], "['', 'model.layers.0.self_attn.q_proj']")
        XCTAssertEqual(node.metadata["namespace"], "test")
        guard case .skipped = model.runONNXChecker() else {
            return XCTFail("IR 10 / opset 20 is beyond ONNX 1.12's checker and must be reported as skipped")
        }
        // Serialising the kept proto writes the unknown field back: a re-read model has the same metadata.
        let directory = try temporaryDirectory(for: self)
        let copy = directory.appendingPathComponent("copy.onnx")
        try Data(try model.proto.serialized()).write(to: copy)
        XCTAssertEqual(try Model.load(path: copy.path).graph.nodes.first?.metadata, node.metadata)
        XCTAssertEqual(try Data(contentsOf: copy), try Data(contentsOf: URL(fileURLWithPath: path)),
                       "an unmodified model re-serialises byte for byte")
    }
}

/// Bad model files: each gets a clear error naming the file or tensor, never a crash.
final class BadModelTests: XCTestCase {
    static let bad = fixturePath("graph/bad")

    func testMissingFile() {
        assertThrows(["/no/such/model.onnx", "No such file"]) { try Model.load(path: "/no/such/model.onnx") }
    }

    func testEmptyFile() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("empty.onnx").path
        try Data().write(to: URL(fileURLWithPath: path))
        assertThrows([path, "not a valid ONNX model", "empty"]) { try Model.load(path: path) }
    }

    func testFileThatIsNotONNX() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("notes.onnx").path
        try "These are my notes, not a model.\n".write(toFile: path, atomically: true, encoding: .utf8)
        assertThrows([path, "not a valid ONNX model"]) { try Model.load(path: path) }
    }

    func testTruncatedFilesAreRefusedAtEveryCut() throws {
        let source = try Data(contentsOf: URL(fileURLWithPath: fixturePath("graph/dtypes.onnx")))
        let directory = try temporaryDirectory(for: self)
        for fraction in [0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
            let path = directory.appendingPathComponent("cut-\(fraction).onnx").path
            try source.prefix(Int(Double(source.count) * fraction)).write(to: URL(fileURLWithPath: path))
            assertThrows([path]) { try Model.load(path: path) }
        }
        let lastByte = directory.appendingPathComponent("minus-one.onnx").path
        try source.dropLast().write(to: URL(fileURLWithPath: lastByte))
        assertThrows([lastByte]) { try Model.load(path: lastByte) }
    }

    func testExternalDataEscapingTheModelFolderIsRefused() {
        assertThrows(["outside the model's folder", "../outside.bin"]) {
            try Model.load(path: "\(Self.bad)/escaping_location.onnx")
        }
    }

    func testAbsoluteExternalDataLocationIsRefused() {
        assertThrows(["outside the model's folder", "/etc/hostname"]) {
            try Model.load(path: "\(Self.bad)/absolute_location.onnx")
        }
    }

    func testSymlinkPointingOutOfTheModelFolderIsRefused() throws {
        let directory = try temporaryDirectory(for: self)
        let modelFolder = directory.appendingPathComponent("model")
        let outside = directory.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: modelFolder, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        let source = fixturePath("models/llama-dynamo")
        try FileManager.default.copyItem(atPath: "\(source)/model.onnx", toPath: modelFolder.appendingPathComponent("model.onnx").path)
        try FileManager.default.copyItem(atPath: "\(source)/model.onnx.data", toPath: outside.appendingPathComponent("model.onnx.data").path)
        try FileManager.default.createSymbolicLink(
            atPath: modelFolder.appendingPathComponent("model.onnx.data").path,
            withDestinationPath: outside.appendingPathComponent("model.onnx.data").path)
        assertThrows(["outside the model's folder", "model.onnx.data"]) {
            try Model.load(path: modelFolder.appendingPathComponent("model.onnx").path)
        }
        // The same file inside the folder loads.
        try FileManager.default.removeItem(at: modelFolder.appendingPathComponent("model.onnx.data"))
        try FileManager.default.moveItem(at: outside.appendingPathComponent("model.onnx.data"),
                                         to: modelFolder.appendingPathComponent("model.onnx.data"))
        XCTAssertNoThrow(try Model.load(path: modelFolder.appendingPathComponent("model.onnx").path))
    }

    func testMissingExternalDataFile() {
        assertThrows(["missing.bin", "cannot be opened"]) { try Model.load(path: "\(Self.bad)/missing_external.onnx") }
    }

    func testExternalDataFileTooShort() {
        assertThrows(["short_external.bin", "too short"]) { try Model.load(path: "\(Self.bad)/short_external.onnx") }
    }
    /// Found by fuzzing: an initializer whose dims multiply past `Int.max` (`[2^62, 4]`) trapped on overflow in
    /// `Initializer.count` instead of being refused.
    func testDimsWhoseProductOverflowsAreRefused() {
        assertThrows(["'w'", "[4611686018427387904, 4]", "more elements than fit"]) {
            try Model.load(path: fixturePath("fuzz/onnx/huge_dims.onnx"))
        }
    }
}

/// NumPy archives: stored and deflated entries, every supported dtype, and our own writing read back.
final class NPZTests: XCTestCase {
    static let fixtures = fixturePath("graph")

    func checkArrays(_ arrays: [String: Tensor]) {
        assertClose(arrays["f32"]!, Tensor(shape: [2, 3], floats: [0, 1, 2, 3, 4, 5]), relative: 0, absolute: 0)
        assertClose(arrays["i64"]!, Tensor(shape: [4], int64s: [-2, -1, 0, 1]), relative: 0, absolute: 0)
        assertClose(arrays["b"]!, Tensor(shape: [3], bools: [true, false, true]), relative: 0, absolute: 0)
        assertClose(arrays["f16"]!, Tensor(shape: [2], floats: [0.5, -1.5], dataType: .float16), relative: 0, absolute: 0)
    }

    func testStoredArchive() throws {
        checkArrays(try NPZ.read(path: "\(Self.fixtures)/arrays.npz"))
    }

    func testDeflatedArchive() throws {
        let arrays = try NPZ.read(path: "\(Self.fixtures)/arrays_compressed.npz")
        checkArrays(arrays)
        assertClose(arrays["f8"]!, Tensor(shape: [], floats: [2.5], dataType: .double), relative: 0, absolute: 0)
        assertClose(arrays["i32"]!, Tensor(shape: [0], int64s: [], dataType: .int32), relative: 0, absolute: 0)
    }

    func testWrittenArchiveReadsBack() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("out.npz").path
        let tensors: [(name: String, tensor: Tensor)] = [
            ("logits", Tensor(shape: [2, 1, 3], floats: [1.5, -2, 0, .infinity, 3e-8, 7])),
            ("ids", Tensor(shape: [3], int64s: [Int64.min, 0, Int64.max])),
            ("mask", Tensor(shape: [2], bools: [true, false])),
            ("half", Tensor(shape: [], floats: [0.099975586], dataType: .float16)),
            ("small", Tensor(shape: [2], int64s: [-7, 7], dataType: .int32)),
            ("empty", Tensor(shape: [0, 4], floats: [])),
        ]
        try NPZ.write(tensors, path: path)
        let read = try NPZ.read(path: path)
        XCTAssertEqual(read.count, tensors.count)
        for (name, tensor) in tensors {
            assertClose(read[name]!, tensor, relative: 0, absolute: 0, name)
        }
    }

    /// Found by fuzzing: a `.npy` header with shape `(2^62, 4)` trapped on overflow counting its elements.
    func testShapeWhoseProductOverflowsIsRefused() {
        let path = fixturePath("fuzz/npz/huge_shape.npz")
        assertThrows([path, "array 'w'", "[4611686018427387904, 4]", "more elements than fit"]) { try NPZ.read(path: path) }
    }

    /// Found by fuzzing (a timeout): a stored entry whose ZIP64 size is far beyond the file made ZIPFoundation read
    /// empty chunks for hours; it is refused before extraction.
    func testEntryLargerThanTheArchiveIsRefused() {
        let path = fixturePath("fuzz/npz/zip64_entry_larger_than_archive.npz")
        assertThrows([path, "entry 'x.npy' claims", "more than the whole archive's 344"]) { try NPZ.read(path: path) }
    }

    func testNotAnArchive() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("x.npz").path
        try "hello".write(toFile: path, atomically: true, encoding: .utf8)
        assertThrows([path, "not a zip archive"]) { try NPZ.read(path: path) }
    }
}
