/// A dense tensor as the interpreter computes with it.
///
/// Every floating-point type (float32, float16, bfloat16, float64) is held as `Float`, every integer type as
/// `Int64`, and bool as `Bool`; `dataType` remembers the type the model declared, so that a value can be written
/// back in its own type. Row-major, contiguous.
public struct Tensor: Sendable {
    /// The three representations values are computed in.
    public enum StorageKind: Sendable, CustomStringConvertible {
        case float, int64, bool
        public var description: String {
            switch self {
            case .float: "float"
            case .int64: "integer"
            case .bool: "bool"
            }
        }
    }

    /// The values, in row-major order.
    public enum Storage: Sendable {
        case float([Float])
        case int64([Int64])
        case bool([Bool])

        public var kind: StorageKind {
            switch self {
            case .float: .float
            case .int64: .int64
            case .bool: .bool
            }
        }

        public var count: Int {
            switch self {
            case .float(let values): values.count
            case .int64(let values): values.count
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
    public init(shape: [Int], dataType: DataType, storage: Storage) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(storage.count == shape.reduce(1, *), "\(storage.count) values for shape \(shape)")
        precondition(dataType.storageKind == storage.kind, "\(dataType) held as \(storage.kind)")
        self.shape = shape
        self.dataType = dataType
        self.storage = storage
    }

    /// A float32 tensor (or another floating type when `dataType` says so).
    public init(shape: [Int], floats: [Float], dataType: DataType = .float) {
        self.init(shape: shape, dataType: dataType, storage: .float(floats))
    }

    /// An int64 tensor (or another integer type when `dataType` says so).
    public init(shape: [Int], int64s: [Int64], dataType: DataType = .int64) {
        self.init(shape: shape, dataType: dataType, storage: .int64(int64s))
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

    /// The values of an integer tensor. Calling it on another kind is a bug: check `storage.kind` first.
    @inlinable public var int64s: [Int64] {
        guard case .int64(let values) = storage else { preconditionFailure("\(dataType) tensor read as int64") }
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
