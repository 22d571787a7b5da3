/// `Float` to bfloat16 bits (the top half of a float32), rounding to nearest even; NaN stays a quiet NaN.
public func floatToBFloat16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}

/// Values back into `TensorProto.raw_data` bytes: the inverse of `TensorDecoding`.
public enum TensorEncoding {
    /// `tensor`'s values as little-endian bytes of its own `dataType`, as `raw_data` (or an external data file)
    /// holds them: floating types as `raw(_:as:)` makes them, integers wrapped into their width, uint8 and int8
    /// bytes as they are, bool as 0 or 1.
    public static func raw(_ tensor: Tensor) -> [UInt8] {
        switch tensor.storage {
        case .float(let values):
            guard let raw = raw(values, as: tensor.dataType) else {
                preconditionFailure("\(tensor.dataType) held as float")  // every floating type is encodable
            }
            return raw
        case .bytes(let values):
            return values
        case .bool(let values):
            return values.map { $0 ? 1 : 0 }
        case .int64(let values):
            switch tensor.dataType {
            case .int16, .uint16: return bytes(values) { UInt16(truncatingIfNeeded: $0) }
            case .int32, .uint32: return bytes(values) { UInt32(truncatingIfNeeded: $0) }
            default: return bytes(values) { UInt64(bitPattern: $0) }
            }
        }
    }

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

    private static func bytes<Value, T: FixedWidthInteger>(_ values: [Value], _ encode: (Value) -> T) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: values.count * MemoryLayout<T>.size)
        result.withUnsafeMutableBytes { buffer in
            for (index, value) in values.enumerated() {
                buffer.storeBytes(of: encode(value).littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
            }
        }
        return result
    }
}
