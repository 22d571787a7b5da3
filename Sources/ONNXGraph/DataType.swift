/// An ONNX tensor element type, with the raw values of `TensorProto.DataType` in onnx.proto.
public enum DataType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case undefined = 0
    case float = 1
    case uint8 = 2
    case int8 = 3
    case uint16 = 4
    case int16 = 5
    case int32 = 6
    case int64 = 7
    case string = 8
    case bool = 9
    case float16 = 10
    case double = 11
    case uint32 = 12
    case uint64 = 13
    case complex64 = 14
    case complex128 = 15
    case bfloat16 = 16

    /// The name onnx.proto gives the type, lower-cased (`float`, `int64`, `bfloat16`).
    public var description: String {
        switch self {
        case .undefined: "undefined"
        case .float: "float32"
        case .uint8: "uint8"
        case .int8: "int8"
        case .uint16: "uint16"
        case .int16: "int16"
        case .int32: "int32"
        case .int64: "int64"
        case .string: "string"
        case .bool: "bool"
        case .float16: "float16"
        case .double: "float64"
        case .uint32: "uint32"
        case .uint64: "uint64"
        case .complex64: "complex64"
        case .complex128: "complex128"
        case .bfloat16: "bfloat16"
        }
    }

    /// Types whose values the interpreter computes with in `Float` (float32).
    public var isFloatingPoint: Bool {
        switch self {
        case .float, .float16, .bfloat16, .double: true
        default: false
        }
    }

    /// Types whose values the interpreter computes with in `Int64` (uint8 and int8 are held as bytes and widened).
    public var isInteger: Bool {
        switch self {
        case .uint8, .int8, .uint16, .int16, .int32, .int64, .uint32, .uint64: true
        default: false
        }
    }

    /// Bytes one element takes in `raw_data`, or nil for types without a fixed width.
    public var byteWidth: Int? {
        switch self {
        case .bool, .uint8, .int8: 1
        case .uint16, .int16, .float16, .bfloat16: 2
        case .float, .int32, .uint32: 4
        case .double, .int64, .uint64, .complex64: 8
        case .complex128: 16
        case .string, .undefined: nil
        }
    }

    /// The storage the interpreter keeps values of this type in, or nil if it cannot hold them.
    public var storageKind: Tensor.StorageKind? {
        if isFloatingPoint { return .float }
        if self == .uint8 || self == .int8 { return .bytes }
        if isInteger { return .int64 }
        if self == .bool { return .bool }
        return nil
    }
}
