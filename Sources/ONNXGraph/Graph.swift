/// One dimension of a declared shape.
public enum Dimension: Sendable, Equatable, CustomStringConvertible {
    /// A fixed size.
    case fixed(Int)
    /// A named size (`batch`, `sequence`), fixed per run.
    case symbolic(String)
    /// No size or name given.
    case unknown

    public var description: String {
        switch self {
        case .fixed(let size): String(size)
        case .symbolic(let name): name
        case .unknown: "?"
        }
    }
}

/// A graph input, output or intermediate value as the model declares it.
public struct ValueInfo: Sendable, Equatable {
    public var name: String
    /// The element type, `.undefined` when the model does not say (or when the value is not a tensor).
    public var elementType: DataType
    /// The declared shape, nil when the model gives none.
    public var shape: [Dimension]?
    /// False for sequence, map and optional types, which the interpreter does not run.
    public var isTensor: Bool

    public init(name: String, elementType: DataType, shape: [Dimension]?, isTensor: Bool = true) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
        self.isTensor = isTensor
    }

    /// `float32[batch, sequence, 64]`, for messages and `inspect`.
    public var typeDescription: String {
        guard isTensor else { return "non-tensor" }
        let dims = shape.map { "[" + $0.map(\.description).joined(separator: ", ") + "]" } ?? "[unknown rank]"
        return "\(elementType)\(dims)"
    }
}

/// Where an initializer's bytes are.
public enum DataLocation: Sendable, Equatable {
    /// In the model file (`raw_data` or a typed field).
    case inline
    /// In a file beside the model.
    case external(ExternalDataReference)
}

/// `TensorProto.external_data` of one tensor: a byte range of a file named relative to the model's folder.
public struct ExternalDataReference: Sendable, Equatable {
    /// The `location` key, verbatim.
    public var location: String
    public var offset: Int
    /// The `length` key; nil means "to the end of the file".
    public var length: Int?
}

/// A weight or constant stored in the graph; its values are read on demand (`Model.loadTensor`).
public struct Initializer: Sendable {
    public var name: String
    public var dataType: DataType
    public var shape: [Int]
    public var location: DataLocation
    /// Position in the graph's initializer list.
    public var index: Int

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Bytes the values take in their own type.
    public var byteCount: Int { count * (dataType.byteWidth ?? 0) }

    /// Where the values are, for an initializer in external data; nil for an inline one.
    public var externalReference: ExternalDataReference? {
        if case .external(let reference) = location { return reference }
        return nil
    }
}

/// The main graph of a model.
public struct Graph: Sendable {
    public var name: String
    /// Declared graph inputs; before IR 4 these may include initializers (see `runtimeInputs`).
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]
    /// Declared types of intermediate values (`value_info`).
    public var valueInfo: [ValueInfo]
    public var initializers: [Initializer]
    /// Nodes in the file's order, which ONNX requires to be topological.
    public var nodes: [Node]

    /// The inputs a caller must (or, for ones with an initializer default, may) feed.
    public var runtimeInputs: [ValueInfo] {
        let initialized = Set(initializers.map(\.name))
        return inputs.filter { !initialized.contains($0.name) }
    }
}
