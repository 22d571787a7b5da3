import Foundation
import ONNXGraph

// Loops shared by the elementwise, comparison, activation, normalisation and reduction ops. Each op supplies its
// per-element function and these loops (over `mapKernel` / `broadcastKernel` in Broadcast.swift) handle types,
// broadcasting, storage kinds and threads, so that no op carries its own copy of a loop.

// MARK: - Arithmetic and comparison ops

/// A binary arithmetic op (`Add`, `Sub`, `Mul`, `Div`) given by its function on floats and on integers; it gets
/// its `init(node:version:)` (no attributes) and a `run` that broadcasts, from this protocol.
protocol ArithmeticOperator: Operator {
    init()
    /// The op on floating-point values (every floating type computes in `Float`).
    static func float(_ a: Float, _ b: Float) -> Float
    /// The op on integer values (every integer type computes in `Int64`); should wrap on overflow (`&+`).
    static func integer(_ a: Int64, _ b: Int64) -> Int64
}

extension ArithmeticOperator {
    init(node: Node, version: Int) throws { self.init() }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try broadcastArithmetic(try inputs.required(0), try inputs.required(1), Self.self)]
    }
}

/// `Op.float` as a kernel.
enum FloatArithmetic<Op: ArithmeticOperator>: BinaryKernel {
    static func apply(_ a: Float, _ b: Float) -> Float { Op.float(a, b) }
}

/// `Op.integer` as a kernel.
enum IntegerArithmetic<Op: ArithmeticOperator>: BinaryKernel {
    static func apply(_ a: Int64, _ b: Int64) -> Int64 { Op.integer(a, b) }
}

/// Throws unless `a` and `b` have the same element type, as ONNX requires of two inputs bound to one type
/// parameter (`T`), naming both types.
func requireSameType(_ a: Tensor, _ b: Tensor, _ opType: String) throws(KernelError) {
    guard a.dataType == b.dataType else {
        throw KernelError("\(opType): inputs must have the same type, got \(a.dataType) and \(b.dataType)")
    }
}

/// `a op b` elementwise with numpy broadcasting, with `Op.float` for floating types and `Op.integer` for
/// integer types (see the other overload).
func broadcastArithmetic<Op: ArithmeticOperator>(_ a: Tensor, _ b: Tensor, _: Op.Type) throws(KernelError) -> Tensor {
    try broadcastArithmetic(a, b, Op.opType, float: FloatArithmetic<Op>.self, integer: IntegerArithmetic<Op>.self)
}

/// `a op b` elementwise with numpy broadcasting, with the kernel `float` for floating types and `integer` for
/// integer types.
///
/// The result is brought back to the inputs' declared type, which the output keeps: rounded to float16/bfloat16
/// precision, wrapped into the integer width (uint8 200 + 100 is 44).
func broadcastArithmetic<FloatKernel: BinaryKernel, IntegerKernel: BinaryKernel>(
    _ a: Tensor, _ b: Tensor, _ opType: String, float: FloatKernel.Type, integer: IntegerKernel.Type
) throws(KernelError) -> Tensor
where FloatKernel.Left == Float, FloatKernel.Right == Float, FloatKernel.Output == Float,
      IntegerKernel.Left == Int64, IntegerKernel.Right == Int64, IntegerKernel.Output == Int64 {
    try requireSameType(a, b, opType)
    let shape = try broadcastShape([a.shape, b.shape])
    switch (a.widenedStorage, b.widenedStorage) {
    case (.float(let x), .float(let y)):
        let values = broadcastKernel(x, a.shape, y, b.shape, outputShape: shape, FloatKernel.self)
        return Tensor(shape: shape, floats: roundedToPrecision(values, a.dataType), dataType: a.dataType)
    case (.int64(let x), .int64(let y)):
        let values = broadcastKernel(x, a.shape, y, b.shape, outputShape: shape, IntegerKernel.self)
        return Tensor(shape: shape, int64s: wrappedToWidth(values, a.dataType), dataType: a.dataType)
    default:
        throw KernelError("\(opType) is not defined for \(a.dataType) inputs")
    }
}

/// A comparison op (`Equal`, `Greater`, `LessOrEqual`) given by its function on each storage kind; it gets its
/// `init(node:version:)` (no attributes) and a `run` that broadcasts, from this protocol.
protocol ComparisonOperator: Operator {
    init()
    static func float(_ a: Float, _ b: Float) -> Bool
    static func integer(_ a: Int64, _ b: Int64) -> Bool
    /// Whether ONNX defines the op on bool tensors; `bool` is only called when it does.
    static var comparesBools: Bool { get }
    static func bool(_ a: Bool, _ b: Bool) -> Bool
}

extension ComparisonOperator {
    static var comparesBools: Bool { false }
    static func bool(_ a: Bool, _ b: Bool) -> Bool { false }

    init(node: Node, version: Int) throws { self.init() }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try Self.compare(try inputs.required(0), try inputs.required(1))]
    }

    /// `a op b` elementwise with numpy broadcasting, as a bool tensor. uint64 values, held as the bit patterns of
    /// `Int64`s, are compared as unsigned.
    static func compare(_ a: Tensor, _ b: Tensor) throws(KernelError) -> Tensor {
        try requireSameType(a, b, opType)
        let shape = try broadcastShape([a.shape, b.shape])
        switch (a.widenedStorage, b.widenedStorage) {
        case (.float(let x), .float(let y)):
            return Tensor(shape: shape, bools: broadcastKernel(x, a.shape, y, b.shape, outputShape: shape,
                                                               FloatComparison<Self>.self))
        case (.int64(let x), .int64(let y)):
            let (x, y) = (unsignedOrdered(x, a.dataType), unsignedOrdered(y, b.dataType))
            return Tensor(shape: shape, bools: broadcastKernel(x, a.shape, y, b.shape, outputShape: shape,
                                                               IntegerComparison<Self>.self))
        case (.bool(let x), .bool(let y)) where comparesBools:
            return Tensor(shape: shape, bools: broadcastKernel(x, a.shape, y, b.shape, outputShape: shape,
                                                               BoolComparison<Self>.self))
        default:
            throw KernelError("\(opType) is not defined for \(a.dataType) inputs")
        }
    }
}

enum FloatComparison<Op: ComparisonOperator>: BinaryKernel {
    static func apply(_ a: Float, _ b: Float) -> Bool { Op.float(a, b) }
}

enum IntegerComparison<Op: ComparisonOperator>: BinaryKernel {
    static func apply(_ a: Int64, _ b: Int64) -> Bool { Op.integer(a, b) }
}

enum BoolComparison<Op: ComparisonOperator>: BinaryKernel {
    static func apply(_ a: Bool, _ b: Bool) -> Bool { Op.bool(a, b) }
}

/// A unary op on floating-point tensors (`Sqrt`, `Tanh`, ...) given by its function on one value; it gets its
/// `init(node:version:)` (no attributes) and a `run` that maps every element, from this protocol.
protocol FloatFunctionOperator: Operator, UnaryKernel where Input == Float, Output == Float {
    init()
}

extension FloatFunctionOperator {
    init(node: Node, version: Int) throws { self.init() }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        [try mapFloats(try inputs.required(0), Self.opType, Self.self)]
    }
}
/// `K.apply` on every element of a floating-point tensor; the output keeps its type (and its precision).
func mapFloats<K: UnaryKernel>(_ input: Tensor, _ opType: String, _ kernel: K.Type) throws(KernelError) -> Tensor
where K.Input == Float, K.Output == Float {
    try mapFloatValues(input, opType) { mapKernel($0, K.self) }
}

/// `map` on the values of a floating-point tensor (`opType` names the op in the error for any other type); the
/// output keeps the input's shape, type and precision (`roundedToPrecision`).
func mapFloatValues(_ input: Tensor, _ opType: String, _ map: ([Float]) -> [Float]) throws(KernelError) -> Tensor {
    guard case .float(let x) = input.storage else {
        throw KernelError("\(opType) needs a floating-point input, got \(input.dataType)")
    }
    return Tensor(shape: input.shape, floats: roundedToPrecision(map(x), input.dataType), dataType: input.dataType)
}

// MARK: - Element types

/// `values` rounded to the precision of the floating type `dataType` (round to nearest even), so that a float16 or
/// bfloat16 result holds what a tensor of that type can: computing in `Float` and rounding once gives what
/// onnxruntime's float16 kernels give. float32 and float64 values are returned unchanged.
func roundedToPrecision(_ values: [Float], _ dataType: DataType) -> [Float] {
    switch dataType {
    case .float16: mapKernel(values, RoundToFloat16.self)
    case .bfloat16: mapKernel(values, RoundToBFloat16.self)
    default: values
    }
}

/// Rounding to float16 precision (`Float16.init` rounds to nearest even).
enum RoundToFloat16: UnaryKernel {
    static func apply(_ x: Float) -> Float { Float(Float16(x)) }
}

/// Rounding to bfloat16 precision, as onnxruntime's `BFloat16(float)` does: add `0x7FFF` plus the lowest kept bit
/// to the bit pattern and drop the low 16 bits (round to nearest even). NaN stays NaN.
enum RoundToBFloat16: UnaryKernel {
    static func apply(_ x: Float) -> Float {
        if x.isNaN { return x }
        let bits = x.bitPattern
        return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
    }
}

/// Integer values wrapped into the width of `dataType` (two's complement), as a fixed-width integer of that type
/// would hold them: uint8 300 is 44, int8 -129 is 127. 64-bit types are returned unchanged.
func wrappedToWidth(_ values: [Int64], _ dataType: DataType) -> [Int64] {
    switch dataType {
    case .int8: values.map { Int64(Int8(truncatingIfNeeded: $0)) }
    case .uint8: values.map { $0 & 0xFF }
    case .int16: values.map { Int64(Int16(truncatingIfNeeded: $0)) }
    case .uint16: values.map { $0 & 0xFFFF }
    case .int32: values.map { Int64(Int32(truncatingIfNeeded: $0)) }
    case .uint32: values.map { $0 & 0xFFFF_FFFF }
    default: values
    }
}

/// For uint64 (held as `Int64` bit patterns), the values with the sign bit flipped, so that signed comparison of
/// the results orders them as unsigned; other types unchanged. The flip is its own inverse.
func unsignedOrdered(_ values: [Int64], _ dataType: DataType) -> [Int64] {
    dataType == .uint64 ? values.map { $0 ^ Int64.min } : values
}

// MARK: - Rows

/// `(outer, inner)`: the number of elements before and after `axis` in `shape`, so that the tensor is a
/// `[outer, shape[axis], inner]` array.
func splitAround(_ shape: [Int], axis: Int) -> (outer: Int, inner: Int) {
    (shape[..<axis].reduce(1, *), shape[(axis + 1)...].reduce(1, *))
}

/// Calls `body` on disjoint ranges of `rows` rows of `rowLength` elements each, concurrently when there is
/// enough work: the row-wise ops (Softmax, LayerNormalization, ReduceMean) parallelise over rows.
@inline(__always)
func forEachRowChunk(rows: Int, rowLength: Int, _ body: (Range<Int>) -> Void) {
    Parallel.forEachChunk(rows, minimumPerThread: max(1, 32_768 / max(rowLength, 1)), body)
}

/// The sum of `count` floats from `values`, with eight independent accumulators so that it vectorises (a single
/// running sum cannot be reordered by the compiler); also more accurate than one serial sum.
@inlinable @inline(__always)
public func vectorSum(_ values: UnsafePointer<Float>, _ count: Int) -> Float {
    var lanes = SIMD8<Float>.zero
    var index = 0
    let raw = UnsafeRawPointer(values)
    while index + 8 <= count {
        lanes += raw.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
        index += 8
    }
    var total = lanes.sum()
    while index < count {
        total += values[index]
        index += 1
    }
    return total
}

/// `Σ (values[k] - center)²` over `count` floats, vectorised like `vectorSum`.
@inline(__always)
func vectorSquaredDeviationSum(_ values: UnsafePointer<Float>, _ count: Int, center: Float) -> Float {
    var lanes = SIMD8<Float>.zero
    let centers = SIMD8<Float>(repeating: center)
    var index = 0
    let raw = UnsafeRawPointer(values)
    while index + 8 <= count {
        let deviation = raw.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self) - centers
        lanes += deviation * deviation
        index += 8
    }
    var total = lanes.sum()
    while index < count {
        let deviation = values[index] - center
        total += deviation * deviation
        index += 1
    }
    return total
}

