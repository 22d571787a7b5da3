/// Everything that can go wrong reading a model or a tensor file, each case with what a user needs to act.
public enum GraphError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be opened or read.
    case unreadableFile(path: String, reason: String)
    /// The file is not a parseable ONNX model (not protobuf, truncated, or missing what every model has).
    case notAnONNXModel(path: String, reason: String)
    /// The model parsed but is inconsistent (a node reads a value nothing defines, a tensor's size is wrong, ...).
    case invalidModel(path: String, reason: String)
    /// A tensor in the model cannot be loaded.
    case invalidTensor(name: String, reason: String)
    /// A tensor's `location` points outside the model's folder; refused so a model cannot read arbitrary files.
    case externalDataOutsideModelFolder(tensor: String, location: String)
    /// A tensor's external data file is missing or too short.
    case externalDataUnavailable(tensor: String, location: String, reason: String)
    /// A tensor uses an element type the interpreter does not compute with.
    case unsupportedDataType(name: String, dataType: String)
    /// A node's attribute is missing or of the wrong kind.
    case invalidAttribute(node: String, opType: String, attribute: String, reason: String)
    /// An `.npz` file is malformed or holds an array the interpreter cannot represent.
    case invalidNPZ(path: String, reason: String)
    /// A model file could not be written (the output is the input, its folder is missing or read-only, the disk
    /// is full). Nothing partial is left at `path`.
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason):
            "cannot read '\(path)': \(reason)"
        case .notAnONNXModel(let path, let reason):
            "'\(path)' is not a valid ONNX model: \(reason)"
        case .invalidModel(let path, let reason):
            "invalid ONNX model '\(path)': \(reason)"
        case .invalidTensor(let name, let reason):
            "tensor '\(name)': \(reason)"
        case .externalDataOutsideModelFolder(let tensor, let location):
            "tensor '\(tensor)': external data location '\(location)' is outside the model's folder; "
                + "refusing to read it (locations must be relative paths inside the folder holding the model)"
        case .externalDataUnavailable(let tensor, let location, let reason):
            "tensor '\(tensor)': external data '\(location)' \(reason)"
        case .unsupportedDataType(let name, let dataType):
            "'\(name)' has element type \(dataType), which the interpreter does not support"
        case .invalidAttribute(let node, let opType, let attribute, let reason):
            "\(opType) node \(node): attribute '\(attribute)' \(reason)"
        case .invalidNPZ(let path, let reason):
            "'\(path)': \(reason)"
        case .cannotWrite(let path, let reason):
            "cannot write '\(path)': \(reason)"
        }
    }
}
