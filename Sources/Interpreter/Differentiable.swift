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
}

/// What a gradient rule gets: the forward pass's inputs and outputs (saved by the tape), the gradients of the
/// outputs, and which inputs need a gradient.
public struct GradientContext {
    /// The node's inputs, nil where an optional input was omitted.
    public let inputs: [Tensor?]
    /// The node's outputs, as the forward pass computed them.
    public let outputs: [Tensor]
    /// `dLoss/dOutput` per output; nil where no gradient reaches that output (treat as zeros).
    public let outputGradients: [Tensor?]
    /// Per input: whether its gradient is needed.
    public let wanted: [Bool]

    public init(inputs: [Tensor?], outputs: [Tensor], outputGradients: [Tensor?], wanted: [Bool]) {
        self.inputs = inputs
        self.outputs = outputs
        self.outputGradients = outputGradients
        self.wanted = wanted
    }

    /// Input `index`, which the rule relies on being present.
    public func input(_ index: Int) throws(KernelError) -> Tensor { try inputs.required(index) }

    /// `dLoss/dOutput[index]`, zeros shaped like that output when no gradient reached it.
    public func outputGradient(_ index: Int = 0) -> Tensor {
        if let gradient = outputGradients[index] { return gradient }
        return Tensor(shape: outputs[index].shape, floats: [Float](repeating: 0, count: outputs[index].count),
                      dataType: outputs[index].dataType)
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

/// Per-element formulas shared by several rules.
enum Sum: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum Product: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
enum Quotient: BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float { a / b } }
enum Negation: UnaryKernel { static func apply(_ x: Float) -> Float { -x } }
