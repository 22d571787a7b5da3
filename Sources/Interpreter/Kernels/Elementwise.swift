import Foundation
import ONNXGraph

// Loops shared by the elementwise, comparison, activation, normalisation and reduction ops: each op passes its
// per-element arithmetic as a closure, and these functions (inlined into the op) handle types, broadcasting and
// the storage kinds, so that no op carries its own copy of a loop.

/// Throws unless `a` and `b` have the same element type, as ONNX requires of two inputs bound to one type
/// parameter (`T`), naming both types.
func requireSameType(_ a: Tensor, _ b: Tensor, _ opType: String) throws(KernelError) {
    guard a.dataType == b.dataType else {
        throw KernelError("\(opType): inputs must have the same type, got \(a.dataType) and \(b.dataType)")
    }
}

/// `body(a, b)` elementwise with numpy broadcasting, for the arithmetic ops (`Add`, `Sub`, `Mul`, ...).
///
/// Floating types compute with `float`, integer types with `integer` (which should wrap, `&+`), and the result is
/// brought back to the declared type: rounded to float16/bfloat16 precision, wrapped into the integer width
/// (uint8 200 + 100 is 44). The output keeps the inputs' type.
@inline(__always)
func broadcastArithmetic(
    _ a: Tensor, _ b: Tensor, _ opType: String,
    float: (Float, Float) -> Float, integer: (Int64, Int64) -> Int64
) throws(KernelError) -> Tensor {
    try requireSameType(a, b, opType)
    let shape = try broadcastShape([a.shape, b.shape])
    switch (a.storage, b.storage) {
    case (.float(let x), .float(let y)):
        let values = broadcastBinary(x, a.shape, y, b.shape, outputShape: shape, float)
        return Tensor(shape: shape, floats: roundedToPrecision(values, a.dataType), dataType: a.dataType)
    case (.int64(let x), .int64(let y)):
        let values = broadcastBinary(x, a.shape, y, b.shape, outputShape: shape, integer)
        return Tensor(shape: shape, int64s: wrappedToWidth(values, a.dataType), dataType: a.dataType)
    default:
        throw KernelError("\(opType) is not defined for \(a.dataType) inputs")
    }
}

/// A comparison elementwise with numpy broadcasting, giving a bool tensor.
///
/// `bool` is nil for comparisons ONNX does not define on bools (`Greater`). uint64 values, which are held as the
/// bit patterns of `Int64`s, are compared as unsigned.
@inline(__always)
func broadcastComparison(
    _ a: Tensor, _ b: Tensor, _ opType: String,
    float: (Float, Float) -> Bool, integer: (Int64, Int64) -> Bool, bool: ((Bool, Bool) -> Bool)? = nil
) throws(KernelError) -> Tensor {
    try requireSameType(a, b, opType)
    let shape = try broadcastShape([a.shape, b.shape])
    switch (a.storage, b.storage) {
    case (.float(let x), .float(let y)):
        return Tensor(shape: shape, bools: broadcastBinary(x, a.shape, y, b.shape, outputShape: shape, float))
    case (.int64(let x), .int64(let y)):
        let (x, y) = (unsignedOrdered(x, a.dataType), unsignedOrdered(y, b.dataType))
        return Tensor(shape: shape, bools: broadcastBinary(x, a.shape, y, b.shape, outputShape: shape, integer))
    case (.bool(let x), .bool(let y)):
        guard let bool else { throw KernelError("\(opType) is not defined for bool inputs") }
        return Tensor(shape: shape, bools: broadcastBinary(x, a.shape, y, b.shape, outputShape: shape, bool))
    default:
        throw KernelError("\(opType) is not defined for \(a.dataType) inputs")
    }
}

/// `body(x)` on every element of a floating-point tensor; the output keeps its type (and its precision).
@inline(__always)
func mapFloats(_ input: Tensor, _ opType: String, _ body: (Float) -> Float) throws(KernelError) -> Tensor {
    guard case .float(let x) = input.storage else {
        throw KernelError("\(opType) needs a floating-point input, got \(input.dataType)")
    }
    return Tensor(shape: input.shape, floats: roundedToPrecision(mapElements(x, body), input.dataType),
                  dataType: input.dataType)
}

/// `values` rounded to the precision of the floating type `dataType` (round to nearest even), so that a float16 or
/// bfloat16 result holds what a tensor of that type can: computing in `Float` and rounding once gives what
/// onnxruntime's float16 kernels give. float32 and float64 values are returned unchanged.
func roundedToPrecision(_ values: [Float], _ dataType: DataType) -> [Float] {
    switch dataType {
    case .float16: mapElements(values) { Float(Float16($0)) }
    case .bfloat16: mapElements(values, roundedToBFloat16)
    default: values
    }
}

/// `value` rounded to the nearest bfloat16 (ties to even), as onnxruntime's `BFloat16(float)` does: add
/// `0x7FFF` plus the lowest kept bit to the bit pattern and drop the low 16 bits. NaN stays NaN.
func roundedToBFloat16(_ value: Float) -> Float {
    if value.isNaN { return value }
    let bits = value.bitPattern
    return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
}

/// Integer values wrapped into the width of `dataType` (two's complement), as a fixed-width integer of that type
/// would hold them: uint8 300 is 44, int8 -129 is 127. 64-bit types are returned unchanged.
func wrappedToWidth(_ values: [Int64], _ dataType: DataType) -> [Int64] {
    switch dataType {
    case .int8: mapElements(values) { Int64(Int8(truncatingIfNeeded: $0)) }
    case .uint8: mapElements(values) { $0 & 0xFF }
    case .int16: mapElements(values) { Int64(Int16(truncatingIfNeeded: $0)) }
    case .uint16: mapElements(values) { $0 & 0xFFFF }
    case .int32: mapElements(values) { Int64(Int32(truncatingIfNeeded: $0)) }
    case .uint32: mapElements(values) { $0 & 0xFFFF_FFFF }
    default: values
    }
}

/// For uint64 (held as `Int64` bit patterns), the values with the sign bit flipped, so that signed comparison of
/// the results orders them as unsigned; other types unchanged. The flip is its own inverse.
func unsignedOrdered(_ values: [Int64], _ dataType: DataType) -> [Int64] {
    dataType == .uint64 ? mapElements(values) { $0 ^ Int64.min } : values
}

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
@inline(__always)
func vectorSum(_ values: UnsafePointer<Float>, _ count: Int) -> Float {
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

/// The largest of `count` (at least one) floats, vectorised; NaNs are not propagated (callers that subtract the
/// maximum get NaN from the NaN element itself).
@inline(__always)
func vectorMaximum(_ values: UnsafePointer<Float>, _ count: Int) -> Float {
    var index = 0
    var result = -Float.infinity
    let raw = UnsafeRawPointer(values)
    if count >= 8 {
        var lanes = SIMD8<Float>(repeating: -.infinity)
        while index + 8 <= count {
            lanes = pointwiseMax(lanes, raw.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self))
            index += 8
        }
        result = lanes.max()
    }
    while index < count {
        result = Swift.max(result, values[index])
        index += 1
    }
    return result
}
