#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ONNXBridge

/// An edited copy of a model's proto, written back as a new model file: the exporter's way of changing a few
/// initializers (merged weights) or adding a few nodes (LoRA kept as nodes) while every field it does not touch
/// (node order and names, opset imports, IR version, value_info, doc strings, metadata, unknown fields) stays as
/// the input had it.
///
/// External data is written the way the input had it: an initializer stored externally in the input goes to one
/// data file beside the output (`<output file name>.data`), an inline one stays inline; added initializers go
/// external when the input had external data and they are at least `externalThreshold` bytes (onnx's own
/// `size_threshold`). Offsets are 64-bit, so data files over 2 GiB work; the `.onnx` file itself stays under
/// protobuf's 2 GiB limit because the large tensors are outside it.
public final class ModelEditor {
    /// The model being edited (its proto is not changed; the editor works on a copy).
    public let base: Model
    private let proto: ProtoModel
    /// New raw values (the initializer's own type, little-endian) by initializer index.
    private var replacedValues: [Int: [UInt8]] = [:]
    /// Where each initializer goes in the output: true for the external data file.
    private var external: [Bool]
    private var initializerNames: [String: Int] = [:]
    private var nodeCount: Int
    /// Bytes from which an added initializer goes to the external data file (when the input has one).
    public var externalThreshold = 1024

    public init(_ model: Model) {
        base = model
        proto = model.proto.copy()
        external = model.graph.initializers.map { $0.externalReference != nil }
        for initializer in model.graph.initializers where initializerNames[initializer.name] == nil {
            initializerNames[initializer.name] = initializer.index
        }
        nodeCount = model.graph.nodes.count
    }

    /// True when the input keeps some initializers in external data.
    public var hasExternalData: Bool { base.graph.initializers.contains { $0.externalReference != nil } }

    /// Replaces the values of initializer `name` with `raw` (its own data type and shape, little-endian).
    public func replaceValues(ofInitializer name: String, raw: [UInt8]) throws(GraphError) {
        guard let index = initializerNames[name] else {
            throw .invalidModel(path: base.path, reason: "no initializer '\(name)' to replace")
        }
        let initializer = base.graph.initializers[index]
        guard raw.count == initializer.byteCount else {
            throw .invalidTensor(name: name, reason:
                "replacement holds \(raw.count) bytes, but \(initializer.dataType)\(initializer.shape) needs \(initializer.byteCount)")
        }
        replacedValues[index] = raw
    }

    /// Adds an initializer `name` (which must be new) holding `raw`.
    public func addInitializer(name: String, dataType: DataType, shape: [Int], raw: [UInt8]) throws(GraphError) {
        guard initializerNames[name] == nil else {
            throw .invalidModel(path: base.path, reason: "an initializer '\(name)' already exists")
        }
        guard raw.count == shape.reduce(1, *) * (dataType.byteWidth ?? -1) else {
            throw .invalidTensor(name: name, reason: "\(raw.count) bytes do not make a \(dataType)\(shape)")
        }
        let index = name.withCString { name in
            shape.map { Int64($0) }.withUnsafeBufferPointer {
                onnx_graph_add_initializer(proto.handle, name, dataType.rawValue, $0.baseAddress, shape.count)
            }
        }
        initializerNames[name] = index
        replacedValues[index] = raw
        external.append(hasExternalData && raw.count >= externalThreshold)
    }

    /// Inserts `node` (name, op type, domain, inputs and outputs; attributes are not written) at `position` of
    /// the node list.
    public func insertNode(_ node: Node, at position: Int) {
        precondition(node.attributes.isEmpty, "ModelEditor.insertNode writes no attributes")
        precondition((0...nodeCount).contains(position), "node position \(position) out of 0...\(nodeCount)")
        node.name.withCString { name in
            node.opType.withCString { op in
                node.domain.withCString { onnx_graph_insert_node(proto.handle, position, name, op, $0) }
            }
        }
        for input in node.inputs { input.withCString { onnx_node_add_input(proto.handle, position, $0) } }
        for output in node.outputs { output.withCString { onnx_node_add_output(proto.handle, position, $0) } }
        nodeCount += 1
    }

    /// Renames input `slot` of the node at `position` (positions count inserted nodes).
    public func setInput(ofNodeAt position: Int, slot: Int, to name: String) {
        name.withCString { onnx_node_set_input(proto.handle, position, slot, $0) }
    }

    /// Renames output `slot` of the node at `position` (positions count inserted nodes).
    public func setOutput(ofNodeAt position: Int, slot: Int, to name: String) {
        name.withCString { onnx_node_set_output(proto.handle, position, slot, $0) }
    }

    /// Appends a graph input; its shape must be given (fixed or symbolic dimensions).
    public func addGraphInput(_ value: ValueInfo) {
        let shape = value.shape ?? []
        let dims = shape.map { dimension -> Int64 in if case .fixed(let size) = dimension { Int64(size) } else { 0 } }
        let params: [UnsafeMutablePointer<CChar>?] = shape.map { dimension in
            switch dimension {
            case .fixed: nil
            case .symbolic(let name): strdup(name)
            case .unknown: strdup("")
            }
        }
        defer { params.forEach { free($0) } }
        value.name.withCString { name in
            dims.withUnsafeBufferPointer { dims in
                params.map { UnsafePointer($0) }.withUnsafeBufferPointer { params in
                    onnx_graph_add_input(proto.handle, name, value.elementType.rawValue, dims.baseAddress,
                                         params.baseAddress, shape.count)
                }
            }
        }
    }

    /// Sets the model's `metadata_props[key]` (replacing an existing entry with that key).
    public func setMetadata(_ key: String, _ value: String) {
        key.withCString { key in value.withCString { onnx_model_set_metadata(proto.handle, key, $0) } }
    }

    /// What `write(to:)` wrote.
    public struct Written: Sendable, Equatable {
        public var modelPath: String
        /// The external data file, nil when every tensor is inline.
        public var dataPath: String?
        public var modelBytes: Int
        public var dataBytes: Int
    }

    /// Writes the edited model to `path` (and its external data to `<path>.data`), each first to a temporary file
    /// in the same folder, flushed, then renamed, so a failure (a full disk, a read-only folder) leaves no partial
    /// file and an existing file at `path` intact until the new one is complete. Refuses to write over the input
    /// model or any of its external data files.
    @discardableResult
    public func write(to path: String) throws(GraphError) -> Written {
        func fail(_ reason: String) -> GraphError { .cannotWrite(path: path, reason: reason) }
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let fileName = url.lastPathComponent
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
            throw fail("the folder '\(folder)' does not exist")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
            throw fail("it is a folder")
        }
        let dataName = fileName + ".data"
        let dataPath = folder + "/" + dataName
        if Self.sameFile(path, base.path) {
            throw fail("it is the input model; write the export to another file")
        }
        for location in Set(base.graph.initializers.compactMap(\.externalReference?.location)) {
            let input = (try? base.externalData.resolve(location, tensor: "")) ?? (base.externalData.directory + "/" + location)
            if Self.sameFile(path, input) { throw fail("it is the input model's external data file '\(location)'") }
            if Self.sameFile(dataPath, input) {
                throw fail("its data file '\(dataPath)' would replace the input model's external data file '\(location)'; "
                    + "choose another output name")
            }
        }

        let token = UUID().uuidString
        let temporaryModel = AtomicFile.temporaryPath(folder: folder, fileName: fileName, token: token)
        let temporaryData = AtomicFile.temporaryPath(folder: folder, fileName: dataName, token: token)
        let writesData = external.contains(true)
        var written = Written(modelPath: path, dataPath: writesData ? dataPath : nil, modelBytes: 0, dataBytes: 0)
        do throws(GraphError) {
            if writesData {
                let data = try OutputFile(path: temporaryData, reportedPath: dataPath)
                defer { data.closeQuietly() }
                for index in external.indices where external[index] {
                    let offset = try data.align(to: Self.alignment(forBytes: byteCount(ofInitializerAt: index)))
                    let length: Int
                    if let raw = replacedValues[index] {
                        try data.write(raw)
                        length = raw.count
                    } else {
                        let initializer = base.graph.initializers[index]
                        guard case .external(let reference) = initializer.location else { preconditionFailure() }
                        let bytes = try base.externalData.bytes(of: reference, tensor: initializer.name)
                        try data.write(bytes)
                        base.externalData.discardPages(of: reference)
                        length = bytes.count
                    }
                    dataName.withCString {
                        onnx_initializer_set_external(proto.handle, index, $0, Int64(offset), Int64(length))
                    }
                }
                try data.finish()
                written.dataBytes = data.offset
            }
            for (index, raw) in replacedValues where !external[index] {
                raw.withUnsafeBytes { onnx_initializer_set_raw_data(proto.handle, index, $0.baseAddress, $0.count) }
            }
            let bytes = try proto.serialized()
            let model = try OutputFile(path: temporaryModel, reportedPath: path)
            defer { model.closeQuietly() }
            try model.write(bytes)
            try model.finish()
            written.modelBytes = bytes.count
            if writesData, rename(temporaryData, dataPath) != 0 {
                throw GraphError.cannotWrite(path: dataPath, reason: "renaming '\(temporaryData)' failed: \(String(cString: strerror(errno)))")
            }
            guard rename(temporaryModel, path) == 0 else {
                throw fail("renaming '\(temporaryModel)' failed: \(String(cString: strerror(errno)))")
            }
            AtomicFile.syncFolder(folder)
        } catch {
            unlink(temporaryModel)
            unlink(temporaryData)
            throw error
        }
        return written
    }

    private func byteCount(ofInitializerAt index: Int) -> Int {
        if let raw = replacedValues[index] { return raw.count }
        return base.graph.initializers[index].byteCount
    }

    /// onnx's external-data alignment: tensors of 1 MiB or more start on a 64 KiB boundary (the allocation
    /// granularity a runtime maps them with), smaller ones on 16 bytes.
    static func alignment(forBytes count: Int) -> Int { count >= 1 << 20 ? 1 << 16 : 16 }

    /// True when both paths name one existing file (same device and inode).
    public static func sameFile(_ first: String, _ second: String) -> Bool {
        var a = stat(), b = stat()
        guard stat(first, &a) == 0, stat(second, &b) == 0 else { return false }
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }

}
