/// A dense tensor as the interpreter computes with it.
///
/// Every floating-point type (float32, float16, bfloat16, float64) is held as `Float`, the 8-bit integer types
/// (uint8, int8) as their bytes, every other integer type as `Int64`, and bool as `Bool`; `dataType` remembers the
/// type the model declared, so that a value can be written back in its own type. Row-major, contiguous.
///
/// The 8-bit types get their own storage because they are what quantised models are made of (an int4 model's
/// packed weights, int8 tables and zero points): held as `Int64` they took 8 bytes per byte, so an int4 model used
/// more memory than its float32 build.
public struct Tensor: Sendable {
    /// The four representations values are held in.
    public enum StorageKind: Sendable, CustomStringConvertible {
        case float, int64, bytes, bool
        public var description: String {
            switch self {
            case .float: "float"
            case .int64: "integer"
            case .bytes: "byte"
            case .bool: "bool"
            }
        }

        /// Whether the storage holds integers (`int64` or `bytes`): `Tensor.int64Values` reads both.
        public var isInteger: Bool { self == .int64 || self == .bytes }
    }

    /// The values, in row-major order.
    public enum Storage: Sendable {
        case float([Float])
        case int64([Int64])
        /// uint8 values, or int8 values as their two's complement bit patterns.
        case bytes([UInt8])
        case bool([Bool])

        public var kind: StorageKind {
            switch self {
            case .float: .float
            case .int64: .int64
            case .bytes: .bytes
            case .bool: .bool
            }
        }

        public var count: Int {
            switch self {
            case .float(let values): values.count
            case .int64(let values): values.count
            case .bytes(let values): values.count
            case .bool(let values): values.count
            }
        }
    }

    /// Dimensions, outermost first; `[]` is a scalar.
    public var shape: [Int]
    /// The element type the model declared for this value.
    public var dataType: DataType
    /// The values.
    public var storage: Storage

    /// Number of elements: the product of `shape` (1 for a scalar, 0 when any dimension is 0).
    @inlinable public var count: Int { shape.reduce(1, *) }
    /// Number of dimensions.
    @inlinable public var rank: Int { shape.count }

    /// Makes a tensor, checking that the number of values matches the shape and that the storage suits the type.
    ///
    /// `Int64` values for a uint8 or int8 tensor are narrowed to its bytes (wrapping, as a cast to the type does),
    /// so that integer code computing in `Int64` can make any integer type.
    public init(shape: [Int], dataType: DataType, storage: Storage) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(storage.count == shape.reduce(1, *), "\(storage.count) values for shape \(shape)")
        var storage = storage
        if dataType.storageKind == .bytes, case .int64(let values) = storage {
            storage = .bytes(values.map { UInt8(truncatingIfNeeded: $0) })
        }
        precondition(dataType.storageKind == storage.kind, "\(dataType) held as \(storage.kind)")
        self.shape = shape
        self.dataType = dataType
        self.storage = storage
    }

    /// A float32 tensor (or another floating type when `dataType` says so).
    public init(shape: [Int], floats: [Float], dataType: DataType = .float) {
        self.init(shape: shape, dataType: dataType, storage: .float(floats))
    }

    /// An int64 tensor (or another integer type when `dataType` says so; uint8 and int8 values are narrowed to
    /// bytes).
    public init(shape: [Int], int64s: [Int64], dataType: DataType = .int64) {
        self.init(shape: shape, dataType: dataType, storage: .int64(int64s))
    }

    /// A uint8 tensor, or int8 (`bytes` then holds the values' bit patterns).
    public init(shape: [Int], bytes: [UInt8], dataType: DataType = .uint8) {
        self.init(shape: shape, dataType: dataType, storage: .bytes(bytes))
    }

    /// A bool tensor.
    public init(shape: [Int], bools: [Bool]) {
        self.init(shape: shape, dataType: .bool, storage: .bool(bools))
    }

    /// A float32 scalar.
    public init(scalar: Float) { self.init(shape: [], floats: [scalar]) }
    /// An int64 scalar.
    public init(scalar: Int64) { self.init(shape: [], int64s: [scalar]) }

    /// The values of a floating-point tensor. Calling it on another kind is a bug: check `storage.kind` first.
    @inlinable public var floats: [Float] {
        guard case .float(let values) = storage else { preconditionFailure("\(dataType) tensor read as float") }
        return values
    }

    /// The values of an integer tensor; uint8 and int8 ones widened from their bytes (a copy). Calling it on
    /// another kind is a bug: check `storage.kind.isInteger` first, or use `int64Values`.
    @inlinable public var int64s: [Int64] {
        guard let values = int64Values else { preconditionFailure("\(dataType) tensor read as int64") }
        return values
    }

    /// The values of an integer tensor as `Int64`s (uint8 and int8 widened from their bytes, a copy), nil for a
    /// floating-point or bool tensor.
    @inlinable public var int64Values: [Int64]? {
        switch storage {
        case .int64(let values): values
        case .bytes(let values) where dataType == .int8: values.map { Int64(Int8(bitPattern: $0)) }
        case .bytes(let values): values.map { Int64($0) }
        case .float, .bool: nil
        }
    }

    /// The storage with uint8 and int8 bytes widened to `Int64` values (a copy), for integer code that computes in
    /// `Int64`: a tensor made from its result with the same `dataType` is narrowed back to bytes.
    public var widenedStorage: Storage {
        if case .bytes = storage { return .int64(int64s) }
        return storage
    }

    /// The bytes of a uint8 or int8 tensor (int8 as bit patterns). Calling it on another kind is a bug: check
    /// `storage.kind` first.
    @inlinable public var bytes: [UInt8] {
        guard case .bytes(let values) = storage else { preconditionFailure("\(dataType) tensor read as bytes") }
        return values
    }

    /// The values of a bool tensor. Calling it on another kind is a bug: check `storage.kind` first.
    @inlinable public var bools: [Bool] {
        guard case .bool(let values) = storage else { preconditionFailure("\(dataType) tensor read as bool") }
        return values
    }

    /// The same values under another shape with the same number of elements.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, dataType: dataType, storage: storage)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        "Tensor<\(dataType)>\(shape)"
    }
}

/// Row-major strides of a shape, in elements.
@inlinable public func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var running = 1
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[axis] = running
        running *= shape[axis]
    }
    return strides
}
