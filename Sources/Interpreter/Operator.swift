import ONNXGraph

/// One ONNX op: built once per node when a model loads (attributes parsed and checked then), run many times.
///
/// Each conforming type lives in a file named after the op and is listed in `OperatorRegistry`.
public protocol Operator: Sendable {
    /// The ONNX op type, as in `MatMul`.
    static var opType: String { get }
    /// The op's domain; `""` is the default ONNX domain.
    static var domain: String { get }
    /// The ONNX `since_version`s whose semantics this type implements, oldest first. A model at opset `o`
    /// runs the newest listed version `<= o`; an opset older than the first is reported as unsupported.
    static var sinceVersions: [Int] { get }

    /// Parses and checks `node`'s attributes for the op version `version` (one of `sinceVersions`).
    init(node: Node, version: Int) throws

    /// Computes the outputs from the inputs. `inputs[i]` is nil where the node omits optional input `i`.
    /// Returns one tensor per output the op defines, at least as many as the node names.
    func run(_ inputs: [Tensor?]) throws -> [Tensor]
}

extension Operator {
    public static var domain: String { "" }
}

/// An op that derives something from its initializer inputs once, when a session is built, instead of on every
/// run (a quantised weight unpacked for its kernel). The session prepares it again when `setInitializer` replaces
/// one of those inputs.
public protocol PreparingOperator: Operator {
    /// This op prepared for `constants`: the node's inputs that are initializers, nil where an input is computed
    /// or fed.
    func prepared(constants: [Tensor?]) throws -> Self
}

/// An op whose product reads a frozen weight that `Session.packWeights` can hand it once, packed into the GEMM's
/// panel layout in the weight's stored precision, so that no run packs it again.
public protocol WeightPackingOperator: Operator {
    /// The input holding the weight, when this node's settings allow a packed one (nil otherwise).
    var packableInput: Int? { get }
    /// This op holding `weight` (the value of `packableInput`) packed, and reading it from there instead of its
    /// input; nil when the weight's shape or type does not suit a packed product.
    func packing(_ weight: Tensor) throws -> Self?
    /// The weight this op holds packed, if any.
    var packedWeight: PackedWeight? { get }
}

/// An op that can read its weight from the panels a product packed it into (`Session.packWeights`): an embedding
/// Gather whose table is also a tied LM head's weight, so that the weight is held once, packed.
public protocol PackedWeightReadingOperator: Operator {
    /// The input holding the weight, when this node's settings allow reading it packed (nil otherwise).
    var packedReadableInput: Int? { get }
    /// This op reading its weight from `packed` instead of its input; nil when that packing does not serve it.
    func reading(_ packed: PackedWeight) -> Self?
}

extension Array where Element == Tensor? {
    /// Input `index`, which the op requires.
    @inlinable public func required(_ index: Int) throws(KernelError) -> Tensor {
        guard index < count, let tensor = self[index] else {
            throw KernelError("required input \(index) is missing")
        }
        return tensor
    }

    /// Optional input `index`, nil when omitted.
    @inlinable public func optional(_ index: Int) -> Tensor? {
        index < count ? self[index] : nil
    }
}

extension Tensor {
    /// The values of an integer tensor as `Int`s: for shape, axes and index inputs.
    public func intValues(_ what: String) throws(KernelError) -> [Int] {
        guard let values = int64Values else {
            throw KernelError("\(what) must be an integer tensor, got \(dataType)")
        }
        return values.map { Int($0) }
    }

    /// The single value of a one-element tensor as a `Double`, whatever its storage.
    public func scalarValue(_ what: String) throws(KernelError) -> Double {
        guard count == 1 else { throw KernelError("\(what) must have one element, got shape \(shape)") }
        switch storage {
        case .float(let values): return Double(values[0])
        case .int64(let values): return Double(values[0])
        case .bytes: return Double(int64s[0])
        case .bool(let values): return values[0] ? 1 : 0
        }
    }
}

/// `axis` (possibly negative, ONNX's `[-rank, rank-1]`) as an index into `shape`, or an error naming the shape.
/// Scalars have no axes.
public func resolveAxis(_ axis: Int, in shape: [Int], _ name: String = "axis") throws(KernelError) -> Int {
    let rank = shape.count
    let resolved = axis < 0 ? axis + rank : axis
    guard resolved >= 0, resolved < rank else {
        throw KernelError("\(name) \(axis) is out of range for an input of shape \(shape) (rank \(rank))")
    }
    return resolved
}
