import ONNXBridge

/// Owns libonnx's parsed `ModelProto` (through ONNXBridge). Kept alive by the `Model` so that the exporter can
/// write it back with every field it did not interpret, unknown (newer) fields included.
public final class ProtoModel: @unchecked Sendable {
    let handle: OpaquePointer

    /// Parses serialized ModelProto bytes; `path` names the file in the error.
    init(bytes: UnsafeRawBufferPointer, path: String) throws(GraphError) {
        var error: UnsafeMutablePointer<CChar>?
        guard let handle = onnx_model_parse(bytes.baseAddress, bytes.count, &error) else {
            throw .notAnONNXModel(path: path, reason: takeString(error) ?? "protobuf parsing failed")
        }
        self.handle = handle
    }

    private init(handle: OpaquePointer) { self.handle = handle }

    deinit { onnx_model_free(handle) }

    /// A deep copy (unknown fields included) that can be edited without changing this one.
    func copy() -> ProtoModel { ProtoModel(handle: onnx_model_clone(handle)) }

    /// The model serialized again, with unknown fields preserved.
    public func serialized() throws(GraphError) -> [UInt8] {
        var data: UnsafeMutableRawPointer?
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        guard onnx_model_serialize(handle, &data, &length, &error) == 0, let data else {
            throw .invalidModel(path: "", reason: takeString(error) ?? "serialization failed")
        }
        defer { onnx_free_buffer(data) }
        return Array(UnsafeRawBufferPointer(start: data, count: length))
    }
}

/// Takes ownership of a malloc'ed C string from the bridge.
func takeString(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
    guard let pointer else { return nil }
    defer { onnx_free_string(pointer) }
    return String(cString: pointer)
}

extension OnnxBytes {
    /// The bytes as UTF-8 text (invalid sequences repaired).
    var string: String {
        guard let data, length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }

    var rawBuffer: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: data, count: length)
    }
}
