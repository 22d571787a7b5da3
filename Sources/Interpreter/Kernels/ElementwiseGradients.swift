import ONNXGraph

// Loops shared by the gradient rules of the elementwise, activation and normalisation ops (the rules themselves
// live in the ops' files). Like the forward loops in Broadcast.swift and Elementwise.swift, per-element formulas
// reach these loops as kernel types, not closures, so that the loops are specialised and vectorise.

/// A per-element gradient formula with one parameter fixed for the whole tensor (QuickGelu's `alpha`), as a type
/// so that loops specialised for it inline it.
protocol ParameterizedGradientKernel {
    /// The input's gradient at one element, from the output's gradient `dy` there, the saved value `x` (an input or
    /// an output of the forward pass) and the parameter.
    static func apply(_ dy: Float, _ x: Float, _ parameter: Float) -> Float
}

/// `K.apply(dY[i], saved[i], parameter)` for every element of two floating-point tensors of one shape, split across
/// cores when large. The result has `dY`'s shape and type.
func combine<K: ParameterizedGradientKernel>(
    _ dY: Tensor, _ saved: Tensor, parameter: Float, _: K.Type
) throws(KernelError) -> Tensor {
    guard dY.shape == saved.shape, case .float(let gradient) = dY.storage,
          case .float(let values) = saved.storage else {
        throw KernelError("gradient arithmetic needs floating-point tensors of one shape, got "
                          + "\(dY.dataType)\(dY.shape) and \(saved.dataType)\(saved.shape)")
    }
    if values.isEmpty { return dY }
    let result = [Float](unsafeUninitializedCapacity: values.count) { out, initialized in
        gradient.withUnsafeBufferPointer { gradient in
            values.withUnsafeBufferPointer { values in
                let outBase = out.baseAddress!, dyBase = gradient.baseAddress!, xBase = values.baseAddress!
                Parallel.forEachChunk(values.count) { range in
                    for i in range { (outBase + i).initialize(to: K.apply(dyBase[i], xBase[i], parameter)) }
                }
            }
        }
        initialized = values.count
    }
    return Tensor(shape: dY.shape, floats: result, dataType: dY.dataType)
}

/// `Σ a[k] · b[k]` over `count` floats, with eight independent accumulators so that it vectorises (like
/// `vectorSum`): Softmax's `Σ dY · Y` along a row.
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
