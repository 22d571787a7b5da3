import ONNXGraph

// Loops shared by the gradient rules of the elementwise, activation and normalisation ops (the rules themselves
// live in the ops' files). Like the forward loops in Broadcast.swift and Elementwise.swift, per-element formulas
// reach these loops as kernel types, not closures, so that the loops are specialised and vectorise.

/// `Σ a[k] · b[k]` over `count` floats, with eight independent accumulators so that it vectorises (like
/// `vectorSum`): attention's `q · k` and `dO · v`, RMS normalisation's `Σ x²`.
@inline(__always)
func vectorDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
    var lanes = SIMD8<Float>.zero
    var index = 0
    let rawA = UnsafeRawPointer(a), rawB = UnsafeRawPointer(b)
    while index + 8 <= count {
        lanes += rawA.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
            * rawB.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
        index += 8
    }
    var total = lanes.sum()
    while index < count {
        total += a[index] * b[index]
        index += 1
    }
    return total
}

/// `1` where `a == b`, else `0`: which elements of an input a `Max` (or `Min`) chose.
enum EqualityIndicator: BinaryKernel {
    static func apply(_ a: Float, _ b: Float) -> Float { a == b ? 1 : 0 }
}
