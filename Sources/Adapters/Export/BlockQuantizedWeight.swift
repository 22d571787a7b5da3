import ONNXGraph

/// A `com.microsoft.MatMulNBits` weight as the node stores it, for merging an adapter into an int4 (or int8) base:
/// dequantised to fp32, merged there, then re-quantised with the node's own bits, block size and zero-point scheme,
/// and written back in the node's own layout.
///
/// Layout (onnxruntime `docs/ContribOperators.md`, MatMulNBits): B uint8 `[N, kb, bs·bits/8]`, row n holding output
/// feature n's K values block by block, low bits first within a byte; scales `[N·kb]` or `[N, kb]` (float32, float16 or
/// bfloat16); zero_points optional, uint8 packed `[N, ⌈kb·bits/8⌉]` (low bits first) or float `[N·kb]`, default
/// `2^(bits−1)`. `W[n, k] = (q − z)·s`.
///
/// Re-quantisation follows onnxruntime's blockwise quantizer, which the builder and `MatMul4BitsQuantizer` call
/// (MLAS `q4_dq.cpp`, `BlockwiseQuantizer::quantizeAndTranspose` with `range2scale` / `range2scalezp`), per block:
/// - without zero points (symmetric): `m` = the block's value of largest magnitude (the maximum when the minimum's
///   magnitude is not larger), `s = m / −2^(bits−1)`, `z = 2^(bits−1)`;
/// - with zero points: `lo = min(min, 0)`, `hi = max(max, 0)`, `s = (hi − lo) / (2^bits − 1)`,
///   `z = clamp(roundf(−lo / s), 0, 2^bits − 1)` (`z = 0` when `s = 0`);
/// - then `q = clamp(roundf(w · (1/s) + z), 0, 2^bits − 1)` (`1/s = 0` when `s = 0`), `roundf` rounding halves away
///   from zero, with `s` first rounded to the scales' own type.
/// A block that is not changed keeps its bytes, scale and zero point exactly.
struct BlockQuantizedWeight {
    let node: String
    let bits: Int
    let blockSize: Int
    /// K, the input features.
    let inFeatures: Int
    /// N, the output features.
    let outFeatures: Int
    /// B's bytes, `[N, kb, blob]`.
    var codes: [UInt8]
    /// One per block, `[N, kb]`, as stored (already rounded to the scales' type).
    var scales: [Float]
    let scaleType: DataType
    var zeroPoints: ZeroPoints

    enum ZeroPoints {
        /// The default `2^(bits−1)`.
        case none
        /// uint8, `rowBytes` per output feature, low bits first.
        case packed([UInt8], rowBytes: Int)
        /// One float per block.
        case float([Float])
    }

    var blocks: Int { (inFeatures + blockSize - 1) / blockSize }
    private var blobSize: Int { blockSize * bits / 8 }
    private var levels: Int { (1 << bits) - 1 }

    /// Reads the node's B (`packed`), scales and zero points; throws naming the model and the node when a shape or
    /// type is not the one its attributes imply.
    init(node: Node, packed: Tensor, scales: Tensor, zeroPoints: Tensor?, modelPath: String = "") throws {
        func fail(_ reason: String) -> AdapterError {
            .unsupportedAdapter(path: modelPath, reason: "cannot merge into MatMulNBits node \(node.label): \(reason)")
        }
        self.node = node.label
        guard let k = try node.int("K"), let n = try node.int("N"), k > 0, n > 0 else { throw fail("K and N are required") }
        (inFeatures, outFeatures) = (k, n)
        bits = try node.int("bits", default: 4)
        blockSize = try node.int("block_size", default: 0)
        guard bits == 4 || bits == 8, blockSize >= 16, blockSize & (blockSize - 1) == 0 else {
            throw fail("bits \(bits) and block_size \(blockSize): merging supports bits 4 and 8 and a power-of-2 block of at least 16")
        }
        let blocks = (k + blockSize - 1) / blockSize
        guard let bytes = packedBytes(packed), bytes.count == n * blocks * blockSize * bits / 8 else {
            throw fail("B must be uint8 [\(n), \(blocks), \(blockSize * bits / 8)], got \(packed.dataType)\(packed.shape)")
        }
        codes = bytes
        guard scales.storage.kind == .float, scales.count == n * blocks else {
            throw fail("scales must be floating-point with \(n)·\(blocks) values, got \(scales.dataType)\(scales.shape)")
        }
        self.scales = scales.floats
        scaleType = scales.dataType
        switch zeroPoints {
        case nil:
            self.zeroPoints = .none
        case let zeroPoints? where zeroPoints.storage.kind == .float:
            guard zeroPoints.count == n * blocks else { throw fail("float zero_points must have \(n)·\(blocks) values, got \(zeroPoints.shape)") }
            self.zeroPoints = .float(zeroPoints.floats)
        case let zeroPoints?:
            let rowBytes = (blocks * bits + 7) / 8
            guard let values = packedBytes(zeroPoints), values.count == n * rowBytes else {
                throw fail("packed zero_points must be uint8 with \(n)·\(rowBytes) values, got \(zeroPoints.dataType)\(zeroPoints.shape)")
            }
            self.zeroPoints = .packed(values, rowBytes: rowBytes)
        }
    }

    func zeroPoint(row: Int, block: Int) -> Float {
        switch zeroPoints {
        case .none: return Float(1 << (bits - 1))
        case .float(let values): return values[row * blocks + block]
        case .packed(let values, let rowBytes):
            let perByte = 8 / bits
            let byte = values[row * rowBytes + block / perByte]
            return Float((byte >> UInt8((block % perByte) * bits)) & UInt8(levels))
        }
    }

    private func code(row: Int, index: Int) -> Int {
        let perByte = 8 / bits
        let byte = codes[row * blocks * blobSize + index / perByte]
        return Int((byte >> UInt8((index % perByte) * bits)) & UInt8(levels))
    }

    /// The weight `[N, K]` in fp32: `(q − z)·s`.
    func dequantized() -> [Float] {
        var weight = [Float](repeating: 0, count: outFeatures * inFeatures)
        for row in 0..<outFeatures {
            for input in 0..<inFeatures {
                let block = input / blockSize
                let q = Float(code(row: row, index: input))
                weight[row * inFeatures + input] = (q - zeroPoint(row: row, block: block)) * scales[row * blocks + block]
            }
        }
        return weight
    }

    /// Re-quantises output features `rows` of `weight` (`[N, K]`, fp32) as onnxruntime's quantizer does (see the
    /// type's comment); every other row keeps its bytes, scales and zero points. Returns the error of the new values
    /// against `weight`, in units of each block's new scale.
    mutating func requantize(rows: [Int], from weight: [Float]) -> RequantizationError {
        var error = RequantizationError()
        let perByte = 8 / bits, maximum = Float(levels), middle = Float(1 << (bits - 1))
        for row in rows {
            for block in 0..<blocks {
                let start = block * blockSize, end = min(start + blockSize, inFeatures)
                let values = weight[(row * inFeatures + start)..<(row * inFeatures + end)]
                let low = values.min() ?? 0, high = values.max() ?? 0
                var scale: Float, zero: Float
                switch zeroPoints {
                case .none:
                    let extreme = abs(high) > abs(low) ? high : low
                    scale = extreme / -middle
                    zero = middle
                default:
                    let (lo, hi) = (min(low, 0), max(high, 0))
                    scale = (hi - lo) / maximum
                    let exact = scale != 0 ? 0 - lo / scale : lo
                    zero = exact < 0 ? 0 : exact > maximum ? maximum : exact.rounded(.toNearestOrAwayFromZero)
                }
                scale = roundedToStored(scale, scaleType)
                let reciprocal = scale != 0 ? 1 / scale : 0
                scales[row * blocks + block] = scale
                setZeroPoint(zero, row: row, block: block)
                // Bytes of this block; a block's last byte is shared only within the block (blob = bs·bits/8).
                let blob = (row * blocks + block) * blobSize
                for byte in blob..<(blob + blobSize) { codes[byte] = 0 }
                for (offset, value) in values.enumerated() {
                    let q = min(max((value * reciprocal + zero).rounded(.toNearestOrAwayFromZero), 0), maximum)
                    codes[blob + offset / perByte] |= UInt8(q) << UInt8((offset % perByte) * bits)
                    if scale != 0 { error.add(((q - zero) * scale - value) / abs(scale)) }
                }
                // Positions past K (a ragged last block) hold the zero point, as the quantizer pads with it.
                for offset in values.count..<blockSize {
                    codes[blob + offset / perByte] |= UInt8(zero) << UInt8((offset % perByte) * bits)
                }
            }
        }
        return error
    }

    private mutating func setZeroPoint(_ value: Float, row: Int, block: Int) {
        switch zeroPoints {
        case .none: return
        case .float(var values):
            values[row * blocks + block] = value
            zeroPoints = .float(values)
        case .packed(var values, let rowBytes):
            let perByte = 8 / bits, shift = UInt8((block % perByte) * bits)
            let index = row * rowBytes + block / perByte
            values[index] = (values[index] & ~(UInt8(levels) << shift)) | (UInt8(value) << shift)
            zeroPoints = .packed(values, rowBytes: rowBytes)
        }
    }

    /// The scales as raw bytes of their own type.
    var scalesRaw: [UInt8] {
        guard let raw = TensorEncoding.raw(scales, as: scaleType) else { preconditionFailure("scales are floating-point") }
        return raw
    }

    /// The zero points as raw bytes of their own type; nil when the node has none.
    func zeroPointsRaw(_ dataType: DataType) -> [UInt8]? {
        switch zeroPoints {
        case .none: return nil
        case .packed(let values, _): return values
        case .float(let values): return TensorEncoding.raw(values, as: dataType)
        }
    }
}

/// How far re-quantised values are from the merged fp32 values, in units of their block's scale (at most 0.5 when
/// nothing is clipped).
public struct RequantizationError: Sendable, Codable, Equatable {
    public var count = 0
    public var maximum: Double = 0
    public var sumOfSquares: Double = 0

    public init() {}

    /// Root mean square over the values counted.
    public var rms: Double { count == 0 ? 0 : (sumOfSquares / Double(count)).squareRoot() }

    mutating func add(_ value: Float) {
        count += 1
        maximum = max(maximum, Double(abs(value)))
        sumOfSquares += Double(value) * Double(value)
    }

    mutating func add(_ other: RequantizationError) {
        count += other.count
        maximum = max(maximum, other.maximum)
        sumOfSquares += other.sumOfSquares
    }

    enum CodingKeys: String, CodingKey { case count, maximum, rms, sumOfSquares }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(count, forKey: .count)
        try container.encode(maximum, forKey: .maximum)
        try container.encode(rms, forKey: .rms)
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        count = try container.decode(Int.self, forKey: .count)
        maximum = try container.decode(Double.self, forKey: .maximum)
        let rms = try container.decode(Double.self, forKey: .rms)
        sumOfSquares = rms * rms * Double(count)
    }
}

/// `value` rounded to the nearest value of `dataType` (float16, bfloat16), as storing it there would.
func roundedToStored(_ value: Float, _ dataType: DataType) -> Float {
    switch dataType {
    case .float16: halfToFloat(floatToHalf(value))
    case .bfloat16: bfloat16ToFloat(floatToBFloat16(value))
    default: value
    }
}

// The two places that read and write the bytes of a uint8 tensor (B and packed zero points), which `Tensor` holds as
// bytes (`Storage.bytes`).

/// The bytes of a uint8 tensor; nil for another type.
func packedBytes(_ tensor: Tensor) -> [UInt8]? {
    guard tensor.dataType == .uint8, case .bytes(let values) = tensor.storage else { return nil }
    return values
}

/// Raw initializer bytes of a uint8 tensor holding `bytes` (uint8 raw data is the bytes themselves).
func rawUInt8(_ bytes: [UInt8]) -> [UInt8] { bytes }
