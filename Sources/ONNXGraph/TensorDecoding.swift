import ONNXBridge

/// Converts stored tensor bytes to the interpreter's representation (`Float`, `Int64`, byte or `Bool` values).
enum TensorDecoding {
    /// The bytes of `shape` at `width` bytes per element, nil when the product does not fit in an `Int`. A file
    /// can declare any dims (`[2^62, 4]`), so this runs before anything multiplies them unchecked (`count`).
    /// `width` comes first, so a shape that passes has an element count that fits as well.
    static func byteCount(shape: [Int], width: Int) -> Int? {
        var total = max(width, 1)
        for dimension in shape {
            let (product, overflow) = total.multipliedReportingOverflow(by: dimension)
            guard !overflow else { return nil }
            total = product
        }
        return total
    }

    /// The error for a shape whose size overflows.
    static func tooLarge(_ shape: [Int], name: String) -> GraphError {
        .invalidTensor(name: name, reason: "shape \(shape) has more elements than fit in memory")
    }

    /// Decodes `count` little-endian elements of `dataType` from `raw`.
    static func decode(raw: UnsafeRawBufferPointer, dataType: DataType, shape: [Int], name: String) throws(GraphError) -> Tensor {
        guard let width = dataType.byteWidth, dataType.storageKind != nil else {
            throw .unsupportedDataType(name: name, dataType: dataType.description)
        }
        guard byteCount(shape: shape, width: width) != nil else { throw tooLarge(shape, name: name) }
        let count = shape.reduce(1, *)
        guard raw.count == count * width else {
            throw .invalidTensor(name: name, reason:
                "holds \(raw.count) bytes, but \(dataType)\(shape) needs \(count * width) (the file may be truncated)")
        }
        func load<T>(_ type: T.Type, _ convert: (T) -> Float) -> [Float] {
            (0..<count).map { convert(raw.loadUnaligned(fromByteOffset: $0 * width, as: T.self)) }
        }
        func integers<T: BinaryInteger>(_ type: T.Type) -> [Int64] {
            (0..<count).map { Int64(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: $0 * width, as: T.self)) }
        }
        switch dataType {
        case .float:
            let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: raw) }
                initialized = count
            }
            return Tensor(shape: shape, floats: values)
        case .float16: return Tensor(shape: shape, floats: load(UInt16.self, halfToFloat), dataType: .float16)
        case .bfloat16: return Tensor(shape: shape, floats: load(UInt16.self, bfloat16ToFloat), dataType: .bfloat16)
        case .double: return Tensor(shape: shape, floats: load(Double.self) { Float($0) }, dataType: .double)
        case .int8, .uint8:
            // Copied as they are: the storage is the bytes (int8 as bit patterns).
            return Tensor(shape: shape, bytes: [UInt8](raw), dataType: dataType)
        case .int16: return Tensor(shape: shape, int64s: integers(Int16.self), dataType: .int16)
        case .uint16: return Tensor(shape: shape, int64s: integers(UInt16.self), dataType: .uint16)
        case .int32: return Tensor(shape: shape, int64s: integers(Int32.self), dataType: .int32)
        case .uint32: return Tensor(shape: shape, int64s: integers(UInt32.self), dataType: .uint32)
        case .int64: return Tensor(shape: shape, int64s: integers(Int64.self), dataType: .int64)
        case .uint64: return Tensor(shape: shape, int64s: integers(UInt64.self), dataType: .uint64)
        case .bool: return Tensor(shape: shape, bools: (0..<count).map { raw[$0] != 0 })
        case .string, .undefined, .complex64, .complex128:
            throw .unsupportedDataType(name: name, dataType: dataType.description)
        }
    }

    /// Decodes a tensor stored in `TensorProto`'s typed fields (`float_data`, `int32_data`, ...), where
    /// onnx.proto puts float16, bfloat16 and the small integer types in `int32_data`.
    static func decodeTyped(_ proto: OpaquePointer, dataType: DataType, shape: [Int], name: String) throws(GraphError) -> Tensor {
        guard byteCount(shape: shape, width: 1) != nil else { throw tooLarge(shape, name: name) }
        let count = shape.reduce(1, *)
        var available = 0
        func check(_ field: String) throws(GraphError) {
            guard available == count else {
                throw .invalidTensor(name: name, reason: "\(field) holds \(available) values, but shape \(shape) needs \(count)")
            }
        }
        func int32Field() throws(GraphError) -> UnsafeBufferPointer<Int32> {
            let pointer = onnx_tensor_int32_data(proto, &available)
            try check("int32_data")
            return UnsafeBufferPointer(start: pointer, count: available)
        }
        switch dataType {
        case .float:
            let pointer = onnx_tensor_float_data(proto, &available)
            try check("float_data")
            return Tensor(shape: shape, floats: Array(UnsafeBufferPointer(start: pointer, count: available)))
        case .double:
            let pointer = onnx_tensor_double_data(proto, &available)
            try check("double_data")
            return Tensor(shape: shape, floats: UnsafeBufferPointer(start: pointer, count: available).map { Float($0) },
                          dataType: .double)
        case .float16:
            return Tensor(shape: shape, floats: try int32Field().map { halfToFloat(UInt16(truncatingIfNeeded: $0)) },
                          dataType: .float16)
        case .bfloat16:
            return Tensor(shape: shape, floats: try int32Field().map { bfloat16ToFloat(UInt16(truncatingIfNeeded: $0)) },
                          dataType: .bfloat16)
        case .int8, .uint8:
            return Tensor(shape: shape, bytes: try int32Field().map { UInt8(truncatingIfNeeded: $0) }, dataType: dataType)
        case .int16, .uint16, .int32:
            return Tensor(shape: shape, int64s: try int32Field().map { Int64($0) }, dataType: dataType)
        case .bool:
            return Tensor(shape: shape, bools: try int32Field().map { $0 != 0 })
        case .int64:
            let pointer = onnx_tensor_int64_data(proto, &available)
            try check("int64_data")
            return Tensor(shape: shape, int64s: Array(UnsafeBufferPointer(start: pointer, count: available)))
        case .uint32, .uint64:
            let pointer = onnx_tensor_uint64_data(proto, &available)
            try check("uint64_data")
            return Tensor(shape: shape, int64s: UnsafeBufferPointer(start: pointer, count: available).map {
                Int64(truncatingIfNeeded: $0)
            }, dataType: dataType)
        case .string, .undefined, .complex64, .complex128:
            throw .unsupportedDataType(name: name, dataType: dataType.description)
        }
    }
}

/// IEEE 754 half precision bits to `Float` (written out so it works where Swift's `Float16` is unavailable).
@inlinable public func halfToFloat(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = Int((bits >> 10) & 0x1F)
    let mantissa = UInt32(bits & 0x3FF)
    if exponent == 0 {
        // Zero or subnormal: mantissa · 2^-24.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    }
    if exponent == 31 {
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}

/// bfloat16 bits (the top half of a float32) to `Float`.
@inlinable public func bfloat16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}
