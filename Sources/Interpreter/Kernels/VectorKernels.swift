import Kernels
import ONNXGraph

// The elementwise C kernels (Sources/Kernels/vector_math.h), which run at the vector width of the ISA the GEMM uses
// (AVX-512: 16 lanes; the Swift loops, built for baseline x86-64, get 4). Their `e^x` is `fastExp` bit for bit; their
// sums keep 32 partial sums where `vectorSum` keeps 8, so sums round differently from it (a few ulp on long rows) and
// identically on every ISA. Ops split work across cores here, as `mapKernel` does, and call a kernel per chunk.

/// Row reductions and exponentials of a log-softmax over long rows (a vocabulary), for the objectives in Training.
public enum VectorKernels {
    /// The largest of `count` floats, NaN ignored; -inf when `count` is 0 or every value is NaN.
    public static func maximum(_ values: UnsafePointer<Float>, _ count: Int) -> Float { kernels_max(count, values) }

    /// `Σ values[i]` over `count` floats.
    public static func sum(_ values: UnsafePointer<Float>, _ count: Int) -> Float { kernels_sum(count, values) }

    /// `Σ e^(values[i] − shift)` over `count` floats, each term also written to `terms` when given. With `shift` the
    /// row's maximum, `log Σ e^values = shift + log(result)` without overflow.
    public static func exponentialSum(
        _ values: UnsafePointer<Float>, _ count: Int, shift: Float, terms: UnsafeMutablePointer<Float>? = nil
    ) -> Float {
        kernels_exp_shifted_sum(count, values, shift, terms)
    }

    /// `output[i] = scale · e^(values[i] − shift)` over `count` floats.
    public static func scaledExponentials(
        _ values: UnsafePointer<Float>, _ count: Int, shift: Float, scale: Float, into output: UnsafeMutablePointer<Float>
    ) {
        kernels_exp_shifted_scaled(count, values, shift, scale, output)
    }
}

/// A kernel over one contiguous chunk: `(count, input, output)`.
typealias UnaryChunkKernel = (Int, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void

/// A kernel over one contiguous chunk of two inputs: `(count, first input, second input, output)`.
typealias BinaryChunkKernel = (Int, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void

/// `kernel` over every element of a floating-point tensor, split across cores like `mapKernel`; the output keeps the
/// input's shape, type and precision, as `mapFloats` does (`mapFloatValues`).
func mapFloatChunks(_ input: Tensor, _ opType: String, _ kernel: UnaryChunkKernel) throws(KernelError) -> Tensor {
    try mapFloatValues(input, opType) { x in
        x.isEmpty ? [] : [Float](unsafeUninitializedCapacity: x.count) { out, initialized in
            x.withUnsafeBufferPointer { x in
                let xBase = x.baseAddress!, outBase = out.baseAddress!
                Parallel.forEachChunk(x.count) { range in
                    kernel(range.count, xBase + range.lowerBound, outBase + range.lowerBound)
                }
            }
            initialized = x.count
        }
    }
}

/// `kernel(dY, saved)` over every element of two floating-point tensors of one shape (a gradient rule), split across
/// cores like `mapKernel`; the result has `dY`'s shape and type.
func combineFloatChunks(_ dY: Tensor, _ saved: Tensor, _ kernel: BinaryChunkKernel) throws(KernelError) -> Tensor {
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
                    let start = range.lowerBound
                    kernel(range.count, dyBase + start, xBase + start, outBase + start)
                }
            }
        }
        initialized = values.count
    }
    return Tensor(shape: dY.shape, floats: result, dataType: dY.dataType)
}
