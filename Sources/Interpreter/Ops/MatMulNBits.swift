import Kernels
import ONNXGraph

/// `com.microsoft.MatMulNBits` (onnxruntime `docs/ContribOperators.md`; CPU kernel
/// `contrib_ops/cpu/quantization/matmul_nbits.cc`): `Y = A · dequantize(B)ᵀ (+ bias)` with B a block-quantised
/// `[N, K]` weight, as onnxruntime-genai's builder (`-p int4`) and onnxruntime's `MatMul4BitsQuantizer` write every
/// projection.
///
/// Letters: K input features, N output features, `bs` = block_size, `kb` = ⌈K / bs⌉ blocks per row.
///
/// Inputs: 0 A `[..., K]`; 1 B uint8 `[N, kb, bs·bits/8]` (row n holds output column n's K values block by block,
/// low bits first within a byte); 2 scales `[N·kb]` or `[N, kb]`; 3 zero_points (optional): uint8 packed
/// `[N·⌈kb·bits/8⌉]` (per row, low bits first) or float `[N·kb]`, default `2^(bits−1)`; 4 g_idx (refused); 5 bias
/// `[N]` (optional). Attributes K, N, bits (4 or 8 here), block_size (a power of 2, ≥ 16), accuracy_level (read as a
/// hint only: the product here is the exact dequantised one, onnxruntime's accuracy_level 0).
///
///     W[n, k] = (q[n, k] − zero_point[n, k / bs]) · scale[n, k / bs]
///     Y       = A · Wᵀ + bias
///
/// Backward: `dA = dY · W` (W dequantised one panel at a time, never whole), `dBias = Σ dY` over every axis but
/// the last. The quantised weight, its scales and zero points are frozen: no gradient is ever computed for them (a
/// LoRA adapter beside the node trains instead).
struct MatMulNBits: Operator {
    static let opType = "MatMulNBits"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let inputFeatures: Int
    let outputFeatures: Int
    let bits: Int
    let blockSize: Int
    /// The weight's bytes, scales and zero points, checked once when B, the scales and the zero points are
    /// initializers (`prepared(constants:)`); nil when one of them is computed or fed.
    var quantized: QuantizedWeight?
    /// Whether the node has input 3 (zero points).
    let hasZeroPoints: Bool

    /// B, its scales and zero points as the kernels read them: `bytes` `[N, kb, bs·bits/8]` (B's own storage,
    /// shared, not copied), and per block its scale and zero point (`W = (q − z)·s`).
    struct QuantizedWeight: Sendable {
        var bytes: [UInt8]
        var scales: [Float]
        /// One per block, or empty when every block has `defaultZeroPoint` (no zero_points input).
        var zeroPoints: [Float]
        var defaultZeroPoint: Float

        /// The zero point of block `index` (`n · kb + block`).
        @inline(__always) func zeroPoint(_ index: Int) -> Float {
            zeroPoints.isEmpty ? defaultZeroPoint : zeroPoints[index]
        }
    }

    /// Rows of A up to which the product reads the quantised weight directly (one pass over its bytes per row,
    /// nothing dequantised into memory): decoding, where A is a token or a few. More rows go through the GEMM, one
    /// panel of W's rows dequantised at a time.
    static let directRows = 16

    /// Multiply-adds of the direct product per thread below which one more thread costs more than it saves: a
    /// 576 × 1536 int4 weight is read in about 100 µs. With GCD's tens-of-microseconds hand-offs the best split was
    /// from 4M (only the LM head split; `bench forward --batch 1 --seq 1` on the SmolLM-135M builder shape: 14.8 ms a
    /// token in MatMulNBits, 24.6 splitting from 32K). On the kernels' pool (a hand-off of about a microsecond)
    /// every projection of that shape splits from 256K: `bench generate` int4 decode at batch 1 went from 37-43 to
    /// 48-55 tokens/s, alternated three times; 64K measured the same as 256K.
    static let directWorkPerThread = 1 << 18

    /// Rows of W (output features) dequantised at once per thread for the GEMM: a `[panelRows, K]` float buffer,
    /// small enough to stay in cache, large enough that each GEMM call is efficient. The full float weight never
    /// exists.
    static let panelRows = 128

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        guard let k = try node.int("K"), let n = try node.int("N"), k > 0, n > 0 else {
            throw refuse("K", "and N are required and must be positive")
        }
        (inputFeatures, outputFeatures) = (k, n)
        bits = try node.int("bits", default: 4)
        guard bits == 4 || bits == 8 else { throw refuse("bits", "= \(bits) is not supported; 4 and 8 are") }
        blockSize = try node.int("block_size", default: 0)
        guard blockSize >= 16, blockSize & (blockSize - 1) == 0 else {
            throw refuse("block_size", "= \(blockSize): it is required and must be a power of 2 of at least 16")
        }
        let prepacked = try node.int("weight_prepacked", default: 0)
        guard prepacked == 0 else { throw refuse("weight_prepacked", "= \(prepacked) (CUDA only) is not supported; only 0 is") }
        hasZeroPoints = node.inputs.count > 3 && !node.inputs[3].isEmpty
        if node.inputs.count > 4 && !node.inputs[4].isEmpty {
            throw refuse("input 4 (g_idx)", "is not supported (act-order GPTQ); re-quantise without g_idx")
        }
    }

    /// Rows `rows` of the dequantised weight `W` `[N, K]` written to `output` (`rows.count · K` floats, row-major).
    func dequantize(_ quantized: QuantizedWeight, rows: Range<Int>, into output: UnsafeMutablePointer<Float>) {
        let (K, bs) = (inputFeatures, blockSize)
        let blocks = (K + bs - 1) / bs, blobSize = bs * bits / 8
        quantized.bytes.withUnsafeBufferPointer { bytes in
            for n in rows {
                let row = output + (n - rows.lowerBound) * K
                for block in 0..<blocks {
                    let index = n * blocks + block
                    let s = quantized.scales[index], z = quantized.zeroPoint(index)
                    let blob = bytes.baseAddress! + index * blobSize, start = row + block * bs
                    let count = min(bs, K - block * bs)
                    if bits == 4 {
                        // Two weights per byte, low nibble first. 16 at a time: each of 8 bytes widened to 16 bits
                        // as (high nibble << 8 | low nibble), which read as 16 bytes is the nibbles in order.
                        var i = 0
                        let (zs, ss) = (SIMD16<Float>(repeating: z), SIMD16<Float>(repeating: s))
                        while i + 16 <= count {
                            let packed = SIMD8<UInt16>(truncatingIfNeeded: UnsafeRawPointer(blob + i >> 1).loadUnaligned(as: SIMD8<UInt8>.self))
                            let nibbles = unsafeBitCast((packed & 0x0F) | ((packed &>> 4) &<< 8), to: SIMD16<UInt8>.self)
                            let values = (SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: nibbles)) - zs) * ss
                            UnsafeMutableRawPointer(start + i).storeBytes(of: values, as: SIMD16<Float>.self)
                            i += 16
                        }
                        while i + 1 < count {
                            let byte = blob[i >> 1]
                            start[i] = (Float(byte & 0x0F) - z) * s
                            start[i + 1] = (Float(byte >> 4) - z) * s
                            i += 2
                        }
                        if i < count { start[i] = (Float(blob[i >> 1] & 0x0F) - z) * s }
                    } else {
                        for i in 0..<count { start[i] = (Float(blob[i]) - z) * s }
                    }
                }
            }
        }
    }

    /// B, the scales and the zero points of `inputs`, checked. B's bytes are shared with its tensor, not copied.
    func unpack(_ inputs: [Tensor?]) throws(KernelError) -> QuantizedWeight {
        let (K, N, bs) = (inputFeatures, outputFeatures, blockSize)
        let blocks = (K + bs - 1) / bs, blobSize = bs * bits / 8
        let packed = try inputs.required(1), scales = try inputs.required(2)
        guard packed.dataType == .uint8, packed.count == N * blocks * blobSize, case .bytes(let bytes) = packed.storage else {
            throw KernelError("B must be uint8 [\(N), \(blocks), \(blobSize)] (N, ⌈K/block_size⌉, block_size·bits/8), "
                              + "got \(packed.dataType)\(packed.shape)")
        }
        guard scales.count == N * blocks, case .float(let scale) = scales.storage else {
            throw KernelError("scales must be floating-point with \(N)·\(blocks) values, got \(scales.dataType)\(scales.shape)")
        }
        let perByte = 8 / bits, mask = UInt8((1 << bits) - 1)
        var zeroPoints: [Float] = []
        if let given = inputs.optional(3) {
            switch given.storage {
            case .float(let values):
                guard values.count == N * blocks else {
                    throw KernelError("float zero_points must have \(N)·\(blocks) values, got \(given.shape)")
                }
                zeroPoints = values
            case .bytes(let values):
                let rowBytes = (blocks * bits + 7) / 8
                guard given.dataType == .uint8, values.count == N * rowBytes else {
                    throw KernelError("packed zero_points must be uint8 with \(N)·\(rowBytes) values, got "
                                      + "\(given.dataType)\(given.shape)")
                }
                zeroPoints = (0..<(N * blocks)).map { index in
                    let (n, block) = index.quotientAndRemainder(dividingBy: blocks)
                    let byte = values[n * rowBytes + block / perByte]
                    return Float((byte >> UInt8((block % perByte) * bits)) & mask)
                }
            case .int64, .bool:
                throw KernelError("zero_points must be uint8 (packed) or floating-point, got \(given.dataType)")
            }
        }
        return QuantizedWeight(bytes: bytes, scales: scale, zeroPoints: zeroPoints,
                               defaultZeroPoint: Float(1 << (bits - 1)))
    }

    /// `A · Wᵀ` for many rows of A (`rows` of them, `a` `[rows, K]`): each thread takes an equal share of W's rows
    /// (in steps of 16, the GEMM's column block), dequantises it one panel at a time into a small buffer of its own,
    /// and multiplies each panel into its columns of Y.
    func panelProduct(_ a: [Float], rows: Int, _ quantized: QuantizedWeight) -> [Float] {
        let (K, N) = (inputFeatures, outputFeatures)
        let panel = Self.panelRows, step = 16
        return [Float](unsafeUninitializedCapacity: rows * N) { y, initialized in
            a.withUnsafeBufferPointer { a in
                let perThread = max(1, BLAS.parallelThreshold / max(rows * step * K, 1))
                Parallel.forEachChunk((N + step - 1) / step, minimumPerThread: perThread) { steps in
                    let share = (steps.lowerBound * step)..<min(N, steps.upperBound * step)
                    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: panel * K)
                    defer { buffer.deallocate() }
                    for start in stride(from: share.lowerBound, to: share.upperBound, by: panel) {
                        let outputs = start..<min(share.upperBound, start + panel)
                        dequantize(quantized, rows: outputs, into: buffer)
                        // Y[:, outputs] = A · W[outputs, :]ᵀ
                        BLAS.serialSgemm(transposeA: false, transposeB: true, m: rows, n: outputs.count, k: K,
                                         alpha: 1, a: a.baseAddress!, lda: K, b: buffer, ldb: K,
                                         beta: 0, c: y.baseAddress! + outputs.lowerBound, ldc: N)
                    }
                }
            }
            initialized = rows * N
        }
    }

    /// `dY · W` (`dY` `[rows, N]`, the result `[rows, K]`), W dequantised 4 panels of its rows at a time (a deeper
    /// inner dimension per GEMM): each adds its share of the inner dimension N (`dA += dY[:, part] · W[part, :]`).
    func panelGradient(_ dY: [Float], rows: Int, _ quantized: QuantizedWeight) -> [Float] {
        let (K, N) = (inputFeatures, outputFeatures)
        let panel = Self.panelRows * 4
        var dA = [Float](repeating: 0, count: rows * K)
        guard rows > 0 else { return dA }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: panel * K)
        defer { buffer.deallocate() }
        dY.withUnsafeBufferPointer { dY in
            dA.withUnsafeMutableBufferPointer { dA in
                var start = 0
                while start < N {
                    let outputs = start..<min(N, start + panel)
                    Parallel.forEachChunk(outputs.count, minimumPerThread: max(1, 16_384 / max(K, 1))) { part in
                        let part = (outputs.lowerBound + part.lowerBound)..<(outputs.lowerBound + part.upperBound)
                        dequantize(quantized, rows: part, into: buffer + (part.lowerBound - outputs.lowerBound) * K)
                    }
                    BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: K, k: outputs.count,
                               alpha: 1, a: dY.baseAddress! + outputs.lowerBound, lda: N, b: buffer, ldb: K,
                               beta: 1, c: dA.baseAddress!, ldc: K)
                    start = outputs.upperBound
                }
            }
        }
        return dA
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0)
        guard a.rank >= 1, a.shape.last == inputFeatures, case .float = a.storage else {
            throw KernelError("A must be floating-point [..., \(inputFeatures)] (K), got \(a.dataType)\(a.shape)")
        }
        let rows = a.count / inputFeatures
        let quantized = try prepared(inputs)
        var y = rows <= Self.directRows
            ? try directProduct(a, quantized)
            : Tensor(shape: Array(a.shape.dropLast()) + [outputFeatures],
                     floats: panelProduct(a.floats, rows: rows, quantized))
        if let bias = inputs.optional(5) {
            guard bias.shape == [outputFeatures] else {
                throw KernelError("bias must have shape [\(outputFeatures)] (N), got \(bias.shape)")
            }
            y = try combine(y, Tensor(shape: bias.shape, floats: bias.floats), Sum.self)
        }
        return [Tensor(shape: y.shape, floats: roundedToPrecision(y.floats, a.dataType), dataType: a.dataType)]
    }

}

extension MatMulNBits: PreparingOperator {
    func prepared(constants: [Tensor?]) throws -> MatMulNBits {
        var prepared = self
        // Only when B, its scales and its zero points (when the node has them) are all initializers.
        let constant = constants.optional(1) != nil && constants.optional(2) != nil
            && (!hasZeroPoints || constants.optional(3) != nil)
        prepared.quantized = constant ? try unpack(constants) : nil
        return prepared
    }

    /// The prepared weight, or the one of `inputs` unpacked now.
    func prepared(_ inputs: [Tensor?]) throws(KernelError) -> QuantizedWeight {
        if let quantized { return quantized }
        return try unpack(inputs)
    }

    /// `A · Wᵀ` read straight from the quantised bytes (`kernels_nbits_rows`, at the CPU's vector width): each weight
    /// `(q − z)·s` made in a register as it is multiplied (the same value the dequantised GEMM reads), up to four rows
    /// of A per pass over the weight, nothing dequantised into memory. W's rows are split across the threads when
    /// each gets `directWorkPerThread` multiply-adds.
    func directProduct(_ a: Tensor, _ quantized: QuantizedWeight) throws(KernelError) -> Tensor {
        let (K, N) = (inputFeatures, outputFeatures)
        let rows = a.count / K
        let y = [Float](unsafeUninitializedCapacity: rows * N) { y, initialized in
            initialized = rows * N
            guard rows * N > 0 else { return }
            let output = UncheckedSendable(y.baseAddress!)
            a.floats.withUnsafeBufferPointer { a in
                quantized.bytes.withUnsafeBufferPointer { bytes in
                    quantized.scales.withUnsafeBufferPointer { scales in
                        quantized.zeroPoints.withUnsafeBufferPointer { zeroPoints in
                            Parallel.forEachChunk(N, minimumPerThread: max(1, Self.directWorkPerThread / max(K * rows, 1))) { outputs in
                                kernels_nbits_rows(rows, outputs.lowerBound, outputs.upperBound, K, blockSize, Int32(bits),
                                                   a.baseAddress, K, bytes.baseAddress, scales.baseAddress,
                                                   zeroPoints.isEmpty ? nil : zeroPoints.baseAddress,
                                                   quantized.defaultZeroPoint, output.value, N)
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: Array(a.shape.dropLast()) + [N], floats: y)
    }
}

extension MatMulNBits: DifferentiableOperator {
    // Reads W (B, scales, zero points: initializers, held anyway) for dA, and the bias; of A and Y only their
    // shapes, so the tape keeps no activation for a frozen quantised projection, as for a frozen MatMul.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: [1, 2, 3, 5]) }

    // dA = dY · W (W the dequantised [N, K]); dBias = Σ dY over all but the last axis; never dB, dScales, dZeroPoints
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        let dY = context.outputGradient()
        let dYFloat = Tensor(shape: dY.shape, floats: dY.floats)
        if context.wants(0) {
            let shape = try context.inputShape(0), type = try context.inputType(0)
            let rows = dY.count / outputFeatures
            let dA = panelGradient(dY.floats, rows: rows, try prepared(context.inputs))
            result[0] = Tensor(shape: shape, floats: dA, dataType: type)
        }
        if context.wants(5), let bias = context.inputs.optional(5) {
            let sums = try reduceGradient(dYFloat, to: [outputFeatures])
            result[5] = Tensor(shape: bias.shape, floats: sums.floats, dataType: bias.dataType)
        }
        return result
    }
}
