/// `Float` to bfloat16 bits (the top half of a float32), rounding to nearest even; NaN stays a quiet NaN.
public func floatToBFloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}

/// Values back into `TensorProto.raw_data` bytes: the inverse of `TensorDecoding` for the floating-point types a
/// weight is stored in.
public enum TensorEncoding {
    /// `values` as little-endian `dataType` bytes, each rounded once (to nearest even) from `Float` (float64 is
    /// exact); nil for a type other than float32, float16, bfloat16 or float64.
    public static func raw(_ values: [Float], as dataType: DataType) -> [UInt8]? {
        switch dataType {
        case .float: bytes(values) { $0.bitPattern }
        case .float16: bytes(values, floatToHalf)
        case .bfloat16: bytes(values, floatToBFloat16)
        case .double: bytes(values) { Double($0).bitPattern }
        default: nil
        }
    }

    private static func bytes<T: FixedWidthInteger>(_ values: [Float], _ encode: (Float) -> T) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: values.count * MemoryLayout<T>.size)
        result.withUnsafeMutableBytes { buffer in
            for (index, value) in values.enumerated() {
                buffer.storeBytes(of: encode(value).littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
            }
        }
        return result
    }
}
