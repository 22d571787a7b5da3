import Foundation
import ONNXBridge

/// An ONNX model read through libonnx: its versions, metadata and main graph. Initializer values are read on
/// demand with `loadTensor(_:)`, from the model file or from external data files beside it.
public struct Model: Sendable {
    /// The file the model was read from.
    public var path: String
    public var irVersion: Int
    /// Opset version per domain; the default domain is `""` (files that say `ai.onnx` are normalised to it).
    public var opsetImports: [String: Int]
    public var producerName: String
    public var producerVersion: String
    public var domain: String
    public var modelVersion: Int
    public var docString: String
    /// `metadata_props`, in file order.
    public var metadata: [(key: String, value: String)]
    public var graph: Graph
    /// The parsed proto, for lossless export.
    public let proto: ProtoModel
    /// The external data files, mapped on first use.
    public let externalData: ExternalDataStore

    /// The default-domain opset.
    public var opset: Int { opsetImports[""] ?? 0 }

    /// Reads and checks the model at `path`: it must parse, declare an IR version and a graph, and every node
    /// must read only values defined before it. Initializer byte sizes and external-data locations are checked
    /// here too (without reading the data), so a truncated or unsafe model fails at load.
    public static func load(path: String) throws(GraphError) -> Model {
        let file = try MappedFile(path: path)
        guard file.bytes.count > 0 else { throw .notAnONNXModel(path: path, reason: "the file is empty") }
        let proto = try ProtoModel(bytes: file.bytes, path: path)
        let directory = (path as NSString).deletingLastPathComponent
        let model = try Model(proto: proto, path: path, directory: directory.isEmpty ? "." : directory)
        try model.validate()
        return model
    }

    private init(proto: ProtoModel, path: String, directory: String) throws(GraphError) {
        let handle = proto.handle
        self.proto = proto
        self.path = path
        let externalData = ExternalDataStore(directory: directory)
        self.externalData = externalData
        irVersion = Int(onnx_model_ir_version(handle))
        guard irVersion > 0 else {
            throw .notAnONNXModel(path: path, reason: "no ir_version (the file parses as protobuf but is not a ModelProto)")
        }
        guard onnx_model_has_graph(handle) != 0 else {
            throw .notAnONNXModel(path: path, reason: "the model has no graph")
        }
        var opsets: [String: Int] = [:]
        for index in 0..<onnx_model_opset_count(handle) {
            let domain = onnx_model_opset_domain(handle, index).string
            opsets[domain == "ai.onnx" ? "" : domain] = Int(onnx_model_opset_version(handle, index))
        }
        opsetImports = opsets
        producerName = onnx_model_producer_name(handle).string
        producerVersion = onnx_model_producer_version(handle).string
        domain = onnx_model_domain(handle).string
        modelVersion = Int(onnx_model_model_version(handle))
        docString = onnx_model_doc_string(handle).string
        metadata = (0..<onnx_model_metadata_count(handle)).map {
            (onnx_model_metadata_key(handle, $0).string, onnx_model_metadata_value(handle, $0).string)
        }
        func values(_ list: OnnxValueList) -> [ValueInfo] {
            (0..<onnx_graph_value_count(handle, list)).map { Self.valueInfo(onnx_graph_value(handle, list, $0)!) }
        }
        let initializers = try (0..<onnx_graph_initializer_count(handle)).map { index throws(GraphError) in
            try Self.initializer(onnx_graph_initializer(handle, index)!, index: index)
        }
        let nodes = try (0..<onnx_graph_node_count(handle)).map { index throws(GraphError) in
            try Self.node(onnx_graph_node(handle, index)!, index: index, model: handle, externalData: externalData)
        }
        graph = Graph(
            name: onnx_graph_name(handle).string, inputs: values(ONNX_VALUES_INPUT), outputs: values(ONNX_VALUES_OUTPUT),
            valueInfo: values(ONNX_VALUES_INTERMEDIATE), initializers: initializers, nodes: nodes)
    }

    /// The values of `initializer`, in the interpreter's representation.
    public func loadTensor(_ initializer: Initializer) throws(GraphError) -> Tensor {
        let proto = onnx_graph_initializer(self.proto.handle, initializer.index)!
        return try Self.decode(proto, name: initializer.name, externalData: externalData)
    }

    /// Result of running ONNX 1.12's C++ checker.
    public enum CheckerOutcome: Sendable, Equatable {
        case passed
        case failed(String)
        /// The checker cannot judge this model (its IR or opset is newer than ONNX 1.12 knows).
        case skipped(String)
    }

    /// Runs libonnx's checker where the model's versions allow it (IR <= 8, default opset <= 17); otherwise says
    /// why it was skipped, since ONNX 1.12's checker refuses newer versions outright.
    public func runONNXChecker() -> CheckerOutcome {
        if irVersion > 8 {
            return .skipped("IR version \(irVersion) is newer than the IR 8 that ONNX 1.12's checker knows")
        }
        if opset > 17 {
            return .skipped("opset \(opset) is newer than the opset 17 that ONNX 1.12's checker knows")
        }
        var error: UnsafeMutablePointer<CChar>?
        if onnx_check_model_file(path, &error) == 0 { return .passed }
        return .failed(takeString(error) ?? "unknown checker error")
    }

    // MARK: - Conversion from the proto

    private static func valueInfo(_ value: OpaquePointer) -> ValueInfo {
        let name = onnx_value_name(value).string
        guard onnx_value_is_tensor(value) != 0 else {
            return ValueInfo(name: name, elementType: .undefined, shape: nil, isTensor: false)
        }
        let elementType = DataType(rawValue: onnx_value_elem_type(value)) ?? .undefined
        var shape: [Dimension]?
        if onnx_value_has_shape(value) != 0 {
            shape = (0..<onnx_value_rank(value)).map { axis in
                switch onnx_value_dim_kind(value, axis) {
                case 1: .fixed(Int(onnx_value_dim_value(value, axis)))
                case 2: .symbolic(onnx_value_dim_param(value, axis).string)
                default: .unknown
                }
            }
        }
        return ValueInfo(name: name, elementType: elementType, shape: shape)
    }

    private static func header(_ tensor: OpaquePointer) throws(GraphError) -> (name: String, dataType: DataType, shape: [Int]) {
        let name = onnx_tensor_name(tensor).string
        let rawType = onnx_tensor_data_type(tensor)
        guard let dataType = DataType(rawValue: rawType), dataType != .undefined else {
            throw .invalidTensor(name: name, reason: "unknown data type \(rawType)")
        }
        let shape = (0..<onnx_tensor_rank(tensor)).map { Int(onnx_tensor_dim(tensor, $0)) }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw .invalidTensor(name: name, reason: "negative dimension in \(shape)")
        }
        // Before `Initializer.count` and the byte-size checks multiply the dims unchecked.
        guard TensorDecoding.byteCount(shape: shape, width: dataType.byteWidth ?? 1) != nil else {
            throw TensorDecoding.tooLarge(shape, name: name)
        }
        return (name, dataType, shape)
    }

    private static func externalReference(_ tensor: OpaquePointer, name: String) throws(GraphError) -> ExternalDataReference {
        var location: String?
        var offset = 0
        var length: Int?
        for index in 0..<onnx_tensor_external_count(tensor) {
            let key = onnx_tensor_external_key(tensor, index).string
            let value = onnx_tensor_external_value(tensor, index).string
            switch key {
            case "location": location = value
            case "offset", "length":
                guard let number = Int(value), number >= 0 else {
                    throw .invalidTensor(name: name, reason: "external data \(key) '\(value)' is not a non-negative integer")
                }
                if key == "offset" { offset = number } else { length = number }
            default: break  // "checksum" and keys from newer ONNX versions are not needed to read the data.
            }
        }
        guard let location else {
            throw .invalidTensor(name: name, reason: "stored externally but external_data has no 'location'")
        }
        return ExternalDataReference(location: location, offset: offset, length: length)
    }

    private static func initializer(_ tensor: OpaquePointer, index: Int) throws(GraphError) -> Initializer {
        let (name, dataType, shape) = try header(tensor)
        let location: DataLocation = onnx_tensor_is_external(tensor) != 0
            ? .external(try externalReference(tensor, name: name)) : .inline
        return Initializer(name: name, dataType: dataType, shape: shape, location: location, index: index)
    }

    static func decode(_ tensor: OpaquePointer, name: String, externalData: ExternalDataStore) throws(GraphError) -> Tensor {
        let (_, dataType, shape) = try header(tensor)
        if onnx_tensor_is_external(tensor) != 0 {
            let reference = try externalReference(tensor, name: name)
            let bytes = try externalData.bytes(of: reference, tensor: name)
            defer { externalData.discardPages(of: reference) }
            return try TensorDecoding.decode(raw: bytes, dataType: dataType, shape: shape, name: name)
        }
        if onnx_tensor_has_raw_data(tensor) != 0 {
            return try TensorDecoding.decode(raw: onnx_tensor_raw_data(tensor).rawBuffer, dataType: dataType, shape: shape, name: name)
        }
        return try TensorDecoding.decodeTyped(tensor, dataType: dataType, shape: shape, name: name)
    }

    private static func node(_ node: OpaquePointer, index: Int, model: OpaquePointer, externalData: ExternalDataStore) throws(GraphError) -> Node {
        var result = Node(
            name: onnx_node_name(node).string, opType: onnx_node_op_type(node).string, domain: onnx_node_domain(node).string,
            inputs: (0..<onnx_node_input_count(node)).map { onnx_node_input(node, $0).string },
            outputs: (0..<onnx_node_output_count(node)).map { onnx_node_output(node, $0).string },
            index: index)
        for position in 0..<onnx_node_metadata_count(model, index) {
            result.metadata[onnx_node_metadata_key(model, index, position).string] =
                onnx_node_metadata_value(model, index, position).string
        }
        for position in 0..<onnx_node_attribute_count(node) {
            let attribute = onnx_node_attribute(node, position)!
            let name = onnx_attribute_name(attribute).string
            result.attributes[name] = try Self.attribute(attribute, name: name, node: result, externalData: externalData)
        }
        return result
    }

    private static func attribute(_ attribute: OpaquePointer, name: String, node: Node, externalData: ExternalDataStore) throws(GraphError) -> Attribute {
        var count = 0
        switch onnx_attribute_type(attribute) {
        case ONNX_ATTRIBUTE_FLOAT: return .float(onnx_attribute_float(attribute))
        case ONNX_ATTRIBUTE_INT: return .int(Int(onnx_attribute_int(attribute)))
        case ONNX_ATTRIBUTE_STRING: return .string(onnx_attribute_string(attribute).string)
        case ONNX_ATTRIBUTE_TENSOR:
            let tensor = onnx_attribute_tensor(attribute)!
            let tensorName = onnx_tensor_name(tensor).string
            return .tensor(try decode(tensor, name: tensorName.isEmpty ? "\(node.label).\(name)" : tensorName,
                                      externalData: externalData))
        case ONNX_ATTRIBUTE_FLOATS:
            let pointer = onnx_attribute_floats(attribute, &count)
            return .floats(Array(UnsafeBufferPointer(start: pointer, count: count)))
        case ONNX_ATTRIBUTE_INTS:
            let pointer = onnx_attribute_ints(attribute, &count)
            return .ints(UnsafeBufferPointer(start: pointer, count: count).map { Int($0) })
        case ONNX_ATTRIBUTE_STRINGS:
            return .strings((0..<onnx_attribute_strings_count(attribute)).map {
                onnx_attribute_strings_element(attribute, $0).string
            })
        case ONNX_ATTRIBUTE_GRAPH: return .unsupported(kind: "graph")
        case ONNX_ATTRIBUTE_GRAPHS: return .unsupported(kind: "graphs")
        case ONNX_ATTRIBUTE_TENSORS: return .unsupported(kind: "tensors")
        case ONNX_ATTRIBUTE_SPARSE_TENSOR: return .unsupported(kind: "sparse_tensor")
        case ONNX_ATTRIBUTE_SPARSE_TENSORS: return .unsupported(kind: "sparse_tensors")
        case ONNX_ATTRIBUTE_TYPE_PROTO: return .unsupported(kind: "type_proto")
        case ONNX_ATTRIBUTE_TYPE_PROTOS: return .unsupported(kind: "type_protos")
        default: return .unsupported(kind: "undefined")
        }
    }

    // MARK: - Structural checks

    private func validate() throws(GraphError) {
        var defined = Set(graph.inputs.map(\.name))
        for initializer in graph.initializers {
            defined.insert(initializer.name)
            try checkData(initializer)
        }
        for node in graph.nodes {
            for input in node.inputs where !input.isEmpty && !defined.contains(input) {
                throw .invalidModel(path: path, reason:
                    "\(node.opType) node \(node.label) reads '\(input)', which no graph input, initializer or earlier node defines")
            }
            for output in node.outputs where !output.isEmpty { defined.insert(output) }
        }
        for output in graph.outputs where !defined.contains(output.name) {
            throw .invalidModel(path: path, reason: "graph output '\(output.name)' is not produced by any node")
        }
    }

    /// Checks an initializer's stored size against its shape without decoding it.
    private func checkData(_ initializer: Initializer) throws(GraphError) {
        let tensor = onnx_graph_initializer(proto.handle, initializer.index)!
        guard let width = initializer.dataType.byteWidth, initializer.dataType.storageKind != nil else {
            throw .unsupportedDataType(name: initializer.name, dataType: initializer.dataType.description)
        }
        let expected = initializer.count * width
        switch initializer.location {
        case .external(let reference):
            let bytes = try externalData.bytes(of: reference, tensor: initializer.name)
            guard bytes.count == expected else {
                throw .externalDataUnavailable(tensor: initializer.name, location: reference.location,
                    reason: "holds \(bytes.count) bytes at offset \(reference.offset), but \(initializer.dataType)\(initializer.shape) needs \(expected)")
            }
        case .inline where onnx_tensor_has_raw_data(tensor) != 0:
            let stored = onnx_tensor_raw_data(tensor).length
            guard stored == expected else {
                throw .invalidTensor(name: initializer.name, reason:
                    "holds \(stored) bytes, but \(initializer.dataType)\(initializer.shape) needs \(expected) (the file may be truncated)")
            }
        case .inline:
            break  // Typed fields are checked when decoded.
        }
    }
}
