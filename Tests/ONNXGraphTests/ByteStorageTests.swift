import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// uint8 and int8 tensors held as their bytes (`Tensor.Storage.bytes`): read from raw data, typed fields and
/// external data without widening, and written back byte for byte.
final class ByteStorageTests: XCTestCase {
    /// Every value an int8 or uint8 byte can hold, and a few more bytes so that the count is not a round number.
    static let allBytes = (0..<259).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    /// `allBytes` four times: 1036 bytes, over the editor's 1024-byte threshold for external data.
    static let repeated = Array([[UInt8]](repeating: allBytes, count: 4).joined())

    func testByteTypesLoadAsBytesFromRawDataAndTypedFields() throws {
        let model = try Model.load(path: "\(fixturePath("graph"))/dtypes.onnx")
        let expected: [DataType: [UInt8]] = [.int8: [254, 255, 0, 1, 2, 3], .uint8: [0, 1, 2, 3, 4, 5]]
        var seen = 0
        for initializer in model.graph.initializers where expected[initializer.dataType] != nil {
            let tensor = try model.loadTensor(initializer)
            XCTAssertEqual(tensor.storage.kind, .bytes, initializer.name)
            XCTAssertEqual(tensor.bytes, expected[initializer.dataType], initializer.name)
            XCTAssertEqual(tensor.int64s, initializer.dataType == .int8 ? [-2, -1, 0, 1, 2, 3] : [0, 1, 2, 3, 4, 5],
                           "\(initializer.name) widened")
            seen += 1
        }
        XCTAssertEqual(seen, 4, "int8 and uint8, each from raw_data and from int32_data")
    }

    /// uint8 and int8 initializers added to a model with external data: the large ones go to the data file, the
    /// small ones inline; both read back as the same bytes, and encode to the bytes they were written from.
    func testByteInitializersRoundTripInlineAndInExternalData() throws {
        let base = try Model.load(path: "\(fixturePath("builder"))/llama-int4/model.onnx")
        let editor = ModelEditor(base)
        XCTAssertTrue(editor.hasExternalData)
        let cases: [(name: String, tensor: Tensor, external: Bool)] = [
            ("bytes_uint8_external", Tensor(shape: [4, 259], bytes: Self.repeated, dataType: .uint8), true),
            ("bytes_int8_external", Tensor(shape: [4, 259], bytes: Self.repeated, dataType: .int8), true),
            ("bytes_uint8_shortest", Tensor(shape: [7, 37], bytes: Self.allBytes), false),
            ("bytes_uint8_inline", Tensor(shape: [2, 3], bytes: [0, 1, 127, 128, 254, 255]), false),
            ("bytes_int8_inline", Tensor(shape: [5], int64s: [-128, -1, 0, 1, 127], dataType: .int8), false),
        ]
        editor.externalThreshold = 1024
        for (name, tensor, _) in cases {
            let raw = TensorEncoding.raw(tensor)
            XCTAssertEqual(raw, tensor.bytes, "\(name): the encoding of a byte tensor is its bytes")
            try editor.addInitializer(name: name, dataType: tensor.dataType, shape: tensor.shape, raw: raw)
        }
        let folder = try temporaryFolder()
        try editor.write(to: "\(folder)/model.onnx")
        let reloaded = try Model.load(path: "\(folder)/model.onnx")
        for (name, tensor, external) in cases {
            let initializer = try XCTUnwrap(reloaded.graph.initializers.first { $0.name == name }, name)
            XCTAssertEqual(initializer.externalReference != nil, external, "\(name) stored externally")
            let loaded = try reloaded.loadTensor(initializer)
            XCTAssertEqual(loaded.dataType, tensor.dataType, name)
            XCTAssertEqual(loaded.shape, tensor.shape, name)
            XCTAssertEqual(loaded.storage.kind, .bytes, name)
            XCTAssertEqual(loaded.bytes, tensor.bytes, name)
            XCTAssertEqual(TensorEncoding.raw(loaded), TensorEncoding.raw(tensor), name)
        }
        // The int4 model's own packed weights (external) and their re-encoding are unchanged by the round trip.
        for initializer in base.graph.initializers where initializer.dataType == .uint8 {
            let original = try base.loadTensor(initializer)
            let copy = try reloaded.loadTensor(try XCTUnwrap(reloaded.graph.initializers.first { $0.name == initializer.name }))
            XCTAssertEqual(copy.bytes, original.bytes, initializer.name)
        }
    }

    /// `TensorEncoding.raw` is the inverse of decoding for every element type: each initializer of the dtypes
    /// fixture (raw and typed fields) replaced by its own encoding reads back identical.
    func testEncodingInvertsDecodingForEveryType() throws {
        let base = try Model.load(path: "\(fixturePath("graph"))/dtypes.onnx")
        let editor = ModelEditor(base)
        var originals: [String: Tensor] = [:]
        for initializer in base.graph.initializers {
            let tensor = try base.loadTensor(initializer)
            originals[initializer.name] = tensor
            try editor.replaceValues(ofInitializer: initializer.name, raw: TensorEncoding.raw(tensor))
        }
        let folder = try temporaryFolder()
        try editor.write(to: "\(folder)/dtypes.onnx")
        let reloaded = try Model.load(path: "\(folder)/dtypes.onnx")
        for initializer in reloaded.graph.initializers {
            let original = try XCTUnwrap(originals[initializer.name], initializer.name)
            let tensor = try reloaded.loadTensor(initializer)
            XCTAssertEqual(tensor.dataType, original.dataType, initializer.name)
            XCTAssertEqual(tensor.storage.kind, original.storage.kind, initializer.name)
            assertClose(tensor, original, relative: 0, absolute: 0, initializer.name)
        }
    }

    /// Int64 values given for a byte type are narrowed as a cast wraps them; widening gives int8 its sign.
    func testInt64ValuesNarrowToBytesAndWidenBack() {
        let int8 = Tensor(shape: [4], int64s: [-129, 128, 255, -1], dataType: .int8)
        XCTAssertEqual(int8.bytes, [127, 128, 255, 255])
        XCTAssertEqual(int8.int64s, [127, -128, -1, -1])
        let uint8 = Tensor(shape: [3], int64s: [256, -1, 300], dataType: .uint8)
        XCTAssertEqual(uint8.bytes, [0, 255, 44])
        XCTAssertEqual(uint8.int64s, [0, 255, 44])
        XCTAssertNil(Tensor(scalar: Float(1)).int64Values)
    }

    func testNPZKeepsByteTensors() throws {
        let folder = try temporaryFolder()
        let tensors = [("u", Tensor(shape: [2, 2], bytes: [0, 7, 128, 255])),
                       ("i", Tensor(shape: [3], bytes: [128, 255, 1], dataType: .int8))]
        try NPZ.write(tensors.map { (name: $0.0, tensor: $0.1) }, path: "\(folder)/bytes.npz")
        let read = try NPZ.read(path: "\(folder)/bytes.npz")
        for (name, tensor) in tensors {
            let copy = try XCTUnwrap(read[name], name)
            XCTAssertEqual(copy.dataType, tensor.dataType, name)
            XCTAssertEqual(copy.shape, tensor.shape, name)
            XCTAssertEqual(copy.bytes, tensor.bytes, name)
        }
    }

    private func temporaryFolder() throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bytes-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        return folder
    }
}
