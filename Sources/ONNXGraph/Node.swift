/// An attribute value of a node, one case per `AttributeProto.AttributeType` the interpreter can use.
public enum Attribute: Sendable {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(Tensor)
    case floats([Float])
    case ints([Int])
    case strings([String])
    /// A kind the interpreter does not evaluate (graphs, sparse tensors, type protos), kept by name so that an op
    /// that needs it can say so.
    case unsupported(kind: String)
}

/// A node of the graph: one op applied to named values.
public struct Node: Sendable {
    /// The node's name; exporters usually set it, but it may be empty.
    public var name: String
    /// The op type, as in `MatMul`.
    public var opType: String
    /// The op's domain; `""` is the default ONNX domain (`ai.onnx`).
    public var domain: String
    /// Input value names in order; `""` stands for an omitted optional input.
    public var inputs: [String]
    /// Output value names in order; `""` stands for an omitted optional output.
    public var outputs: [String]
    /// Attributes by name.
    public var attributes: [String: Attribute]
    /// `NodeProto.metadata_props` (field 9): dynamo exports keep module paths there (`pkg.torch.onnx.name_scopes`).
    public var metadata: [String: String]
    /// The node's position in the graph's node list.
    public var index: Int

    public init(
        name: String, opType: String, domain: String = "", inputs: [String], outputs: [String],
        attributes: [String: Attribute] = [:], metadata: [String: String] = [:], index: Int = 0
    ) {
        self.name = name
        self.opType = opType
        self.domain = domain
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
        self.metadata = metadata
        self.index = index
    }

    /// A label for messages: the name when there is one, else the op type and position.
    public var label: String {
        name.isEmpty ? "\(opType) node #\(index)" : "'\(name)'"
    }

    /// The domain as users read it: `ai.onnx` for the default domain.
    public var domainLabel: String { domain.isEmpty || domain == "ai.onnx" ? "ai.onnx" : domain }

    /// An `int` attribute, or `defaultValue` when absent.
    public func int(_ name: String, default defaultValue: Int) throws(GraphError) -> Int {
        guard let attribute = attributes[name] else { return defaultValue }
        guard case .int(let value) = attribute else { throw wrongKind(name, expected: "int", attribute) }
        return value
    }

    /// An `int` attribute, or nil when absent.
    public func int(_ name: String) throws(GraphError) -> Int? {
        guard let attribute = attributes[name] else { return nil }
        guard case .int(let value) = attribute else { throw wrongKind(name, expected: "int", attribute) }
        return value
    }

    /// A `float` attribute, or `defaultValue` when absent.
    public func float(_ name: String, default defaultValue: Float) throws(GraphError) -> Float {
        guard let attribute = attributes[name] else { return defaultValue }
        guard case .float(let value) = attribute else { throw wrongKind(name, expected: "float", attribute) }
        return value
    }

    /// A `string` attribute, or `defaultValue` when absent.
    public func string(_ name: String, default defaultValue: String) throws(GraphError) -> String {
        guard let attribute = attributes[name] else { return defaultValue }
        guard case .string(let value) = attribute else { throw wrongKind(name, expected: "string", attribute) }
        return value
    }

    /// An `ints` attribute, or nil when absent.
    public func ints(_ name: String) throws(GraphError) -> [Int]? {
        guard let attribute = attributes[name] else { return nil }
        switch attribute {
        case .ints(let values): return values
        default: throw wrongKind(name, expected: "ints", attribute)
        }
    }

    /// A `floats` attribute, or nil when absent.
    public func floats(_ name: String) throws(GraphError) -> [Float]? {
        guard let attribute = attributes[name] else { return nil }
        guard case .floats(let values) = attribute else { throw wrongKind(name, expected: "floats", attribute) }
        return values
    }

    /// A `tensor` attribute, or nil when absent.
    public func tensor(_ name: String) throws(GraphError) -> Tensor? {
        guard let attribute = attributes[name] else { return nil }
        guard case .tensor(let value) = attribute else { throw wrongKind(name, expected: "tensor", attribute) }
        return value
    }

    private func wrongKind(_ attribute: String, expected: String, _ actual: Attribute) -> GraphError {
        .invalidAttribute(node: label, opType: opType, attribute: attribute,
                          reason: "expected \(expected), found \(actual.kindName)")
    }
}

extension Attribute {
    /// The `AttributeProto` kind name, for messages.
    public var kindName: String {
        switch self {
        case .float: "float"
        case .int: "int"
        case .string: "string"
        case .tensor: "tensor"
        case .floats: "floats"
        case .ints: "ints"
        case .strings: "strings"
        case .unsupported(let kind): kind
        }
    }
}
