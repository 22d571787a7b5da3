import ONNXGraph

/// An op with a vector-Jacobian product: given the gradient of a scalar loss with respect to its outputs, the
/// gradient with respect to its inputs. The rule lives in the op's file, its math written beside it.
///
/// Only floating-point values carry gradients, so integer and bool inputs (shapes, indices, masks) are never
/// asked for one.
public protocol DifferentiableOperator: Operator {
    /// `context.wanted[i]` says whether input `i` needs a gradient. Returns one slot per input: the gradient,
    /// shaped like that input, where wanted; nil elsewhere.
    func gradient(_ context: GradientContext) throws -> [Tensor?]

    /// The forward values `gradient` reads when the inputs `wanted` need a gradient: the tape keeps only these
    /// until the backward pass (every value's shape and type are always kept), so the memory a training step holds
    /// is what its rules need (a frozen weight's MatMul keeps no activation; Softmax keeps its output; Add keeps
    /// nothing). Default: every input and output.
    func savedValues(wanted: [Bool]) -> SavedValues
}

extension DifferentiableOperator {
    public func savedValues(wanted: [Bool]) -> SavedValues { .all }
}

/// Which inputs and outputs of a node its gradient rule reads (`DifferentiableOperator.savedValues`).
public struct SavedValues: Sendable, Equatable {
    /// Input positions to keep; nil keeps every input.
    public var inputs: Set<Int>?
    /// Output positions to keep; nil keeps every output.
    public var outputs: Set<Int>?

    public init(inputs: Set<Int>? = [], outputs: Set<Int>? = []) {
        self.inputs = inputs
        self.outputs = outputs
    }

    /// Every input and output.
    public static let all = SavedValues(inputs: nil, outputs: nil)
    /// Shapes and types only.
    public static let shapes = SavedValues()
}

/// What the tape keeps of one node for its gradient rule: the values the rule's `savedValues` names, and the
/// shapes and types of all its inputs and outputs.
struct SavedRecord {
    let op: any DifferentiableOperator
    let inputs: [Tensor?], outputs: [Tensor?]
    let inputShapes: [[Int]?], inputTypes: [DataType?]
    let outputShapes: [[Int]], outputTypes: [DataType]

    init(op: any DifferentiableOperator, inputs: [Tensor?], outputs: [Tensor], wanted: [Bool]) {
        self.op = op
        let saved = op.savedValues(wanted: wanted)
        self.inputs = inputs.enumerated().map { saved.inputs?.contains($0.offset) ?? true ? $0.element : nil }
        self.outputs = outputs.enumerated().map { saved.outputs?.contains($0.offset) ?? true ? $0.element : nil }
        inputShapes = inputs.map { $0?.shape }
        inputTypes = inputs.map { $0?.dataType }
        outputShapes = outputs.map(\.shape)
        outputTypes = outputs.map(\.dataType)
    }
}

/// What a gradient rule gets: the forward pass's inputs and outputs (those its `savedValues` named, saved by the
/// tape), every input's and output's shape and type, the gradients of the outputs, and which inputs need a
/// gradient.
public struct GradientContext {
    /// The node's inputs, nil where an optional input was omitted or the rule did not ask for it to be saved.
    public let inputs: [Tensor?]
    /// The node's outputs as the forward pass computed them, nil where the rule did not ask for it to be saved.
    public let outputs: [Tensor?]
    /// `dLoss/dOutput` per output; nil where no gradient reaches that output (treat as zeros).
    public let outputGradients: [Tensor?]
    /// Per input: whether its gradient is needed.
    public let wanted: [Bool]
    /// Every input's shape and type (nil where omitted), and every output's.
    let inputShapes: [[Int]?], inputTypes: [DataType?]
    let outputShapes: [[Int]], outputTypes: [DataType]

    /// A context with every value saved.
    public init(inputs: [Tensor?], outputs: [Tensor], outputGradients: [Tensor?], wanted: [Bool]) {
        self.inputs = inputs
        self.outputs = outputs
        inputShapes = inputs.map { $0?.shape }
        inputTypes = inputs.map { $0?.dataType }
        outputShapes = outputs.map(\.shape)
        outputTypes = outputs.map(\.dataType)
        self.outputGradients = outputGradients
        self.wanted = wanted
    }

    /// A context from a tape's record: the values kept, the shapes and types of all.
    init(saved record: SavedRecord, outputGradients: [Tensor?], wanted: [Bool]) {
        inputs = record.inputs
        outputs = record.outputs
        inputShapes = record.inputShapes
        inputTypes = record.inputTypes
        outputShapes = record.outputShapes
        outputTypes = record.outputTypes
        self.outputGradients = outputGradients
        self.wanted = wanted
    }

    /// Input `index`, which the rule relies on being present and saved.
    public func input(_ index: Int) throws(KernelError) -> Tensor {
        if index < inputs.count, let input = inputs[index] { return input }
        if index < inputShapes.count, inputShapes[index] != nil {
            throw KernelError("the gradient rule reads input \(index), which its savedValues did not keep (a bug)")
        }
        return try inputs.required(index)
    }

    /// Output `index`, which the rule relies on being saved.
    public func output(_ index: Int) throws(KernelError) -> Tensor {
        guard index < outputs.count, let output = outputs[index] else {
            throw KernelError("the gradient rule reads output \(index), which its savedValues did not keep (a bug)")
        }
        return output
    }

    /// The shape of input `index` (saved or not).
    public func inputShape(_ index: Int) throws(KernelError) -> [Int] {
        guard index < inputShapes.count, let shape = inputShapes[index] else { return try inputs.required(index).shape }
        return shape
    }

    /// The element type of input `index` (saved or not).
    public func inputType(_ index: Int) throws(KernelError) -> DataType {
        guard index < inputTypes.count, let type = inputTypes[index] else { return try inputs.required(index).dataType }
        return type
    }

    /// How many outputs the node has.
    public var outputCount: Int { outputShapes.count }

    /// `dLoss/dOutput[index]`, zeros shaped like that output when no gradient reached it.
    public func outputGradient(_ index: Int = 0) -> Tensor {
        if index < outputGradients.count, let gradient = outputGradients[index] { return gradient }
        let shape = outputShapes[index]
        return Tensor(shape: shape, floats: [Float](repeating: 0, count: shape.reduce(1, *)), dataType: outputTypes[index])
    }

    /// Whether input `index` needs a gradient.
    public func wants(_ index: Int) -> Bool { index < wanted.count && wanted[index] }
}

/// `gradient` summed over the axes along which an input of shape `shape` was broadcast to produce it (numpy
/// broadcasting's adjoint): leading axes the input lacked, and axes where it has size 1.
public func reduceGradient(_ gradient: Tensor, to shape: [Int]) throws(KernelError) -> Tensor {
    if gradient.shape == shape { return gradient }
    guard case .float(let values) = gradient.storage else {
        throw KernelError("gradients are floating-point, got \(gradient.dataType)")
    }
    let outputShape = gradient.shape
    let leading = outputShape.count - shape.count
    guard leading >= 0 else { throw KernelError("cannot reduce a gradient of shape \(outputShape) to \(shape)") }
    // Strides into the reduced tensor: 0 along summed axes.
    let reducedStrides = contiguousStrides(shape)
    let strides = (0..<outputShape.count).map { axis -> Int in
        axis < leading || shape[axis - leading] == 1 ? 0 : reducedStrides[axis - leading]
    }
    var sums = [Float](repeating: 0, count: shape.reduce(1, *))
    guard let rowLength = outputShape.last, rowLength > 0, !values.isEmpty else {
        return Tensor(shape: shape, floats: sums, dataType: gradient.dataType)
    }
    let innerStride = strides[strides.count - 1]
    // Row by row along the last axis: a row either sums into one element (a [.., 1] target) or adds elementwise
    // into a row of the target; the view's positions are offsets into the target.
    let view = StridedView(shape: outputShape, strides: strides)
    values.withUnsafeBufferPointer { source in
        sums.withUnsafeMutableBufferPointer { target in
            view.forEachRow(in: 0..<(source.count / rowLength)) { row, offset in
                let values = source.baseAddress! + row * rowLength
                if innerStride == 0 {
                    target[offset] += vectorSum(values, rowLength)
                } else {
                    for k in 0..<rowLength { target[offset + k] += values[k] }
                }
            }
        }
    }
    return Tensor(shape: shape, floats: sums, dataType: gradient.dataType)
}

/// `a + b` for two gradients of the same shape (accumulating the contributions of a value's several readers, or
/// of several micro-batches).
public func addGradients(_ a: Tensor, _ b: Tensor) throws(KernelError) -> Tensor {
    guard a.shape == b.shape, case .float(let x) = a.storage, case .float(let y) = b.storage else {
        throw KernelError("gradients of shapes \(a.shape) and \(b.shape) cannot be added")
    }
    return Tensor(shape: a.shape, floats: broadcastKernel(x, a.shape, y, b.shape, outputShape: a.shape, Sum.self),
                  dataType: a.dataType)
}


// MARK: - Arithmetic for gradient rules

/// `kernel(a, b)` elementwise with numpy broadcasting, for floating-point tensors: the rules' workhorse (a rule
/// states its per-element formula as a `BinaryKernel`, e.g. `dY · (1 − Y²)` for Tanh).
func combine<K: BinaryKernel>(_ a: Tensor, _ b: Tensor, _ kernel: K.Type) throws(KernelError) -> Tensor
where K.Left == Float, K.Right == Float, K.Output == Float {
    guard case .float(let x) = a.storage, case .float(let y) = b.storage else {
        throw KernelError("gradient arithmetic needs floating-point tensors, got \(a.dataType) and \(b.dataType)")
    }
    let shape = try broadcastShape([a.shape, b.shape])
    return Tensor(shape: shape, floats: broadcastKernel(x, a.shape, y, b.shape, outputShape: shape, kernel), dataType: a.dataType)
}

/// `kernel(x)` elementwise on a floating-point tensor.
func transform<K: UnaryKernel>(_ x: Tensor, _ kernel: K.Type) throws(KernelError) -> Tensor
where K.Input == Float, K.Output == Float {
    guard case .float(let values) = x.storage else {
        throw KernelError("gradient arithmetic needs a floating-point tensor, got \(x.dataType)")
    }
    return Tensor(shape: x.shape, floats: mapKernel(values, kernel), dataType: x.dataType)
}

/// Per-element formulas shared by several rules. `Product` and `Quotient` take a gradient first and a saved factor
/// second, and a zero gradient gives zero whatever the factor: positions no loss reads (padded rows, fully masked
/// attention rows) may hold NaN or infinity in the forward pass, and `0 · NaN` would otherwise carry that NaN into
/// every gradient before them (torch gives NaN there; a position whose gradient is exactly zero contributes nothing).
enum Product: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a == 0 ? 0 : a * b } }
enum Quotient: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a == 0 ? 0 : a / b } }
enum Sum: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum Negation: UnaryKernel { static func apply(_ x: Float) -> Float { -x } }
