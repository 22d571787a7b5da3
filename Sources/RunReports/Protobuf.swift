import Foundation

/// The few protobuf wire-format pieces TensorBoard's `Event` needs (protobuf's encoding guide: varints, fixed 32/64,
/// length-delimited), written by hand so the target needs no protobuf library. Fields are appended in field-number
/// order, as protobuf's own serialisers write them.
struct ProtobufWriter {
    private(set) var data = Data()

    private mutating func key(_ field: Int, _ wireType: Int) { varint(UInt64(field << 3 | wireType)) }

    private mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            data.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        data.append(UInt8(value))
    }

    /// int64, int32 and enum fields (varint; negative values as their 64-bit two's complement).
    mutating func int(_ field: Int, _ value: Int64) {
        key(field, 0)
        varint(UInt64(bitPattern: value))
    }

    mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        data.append(contentsOf: TFRecord.littleEndianBytes(value.bitPattern))
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        data.append(contentsOf: TFRecord.littleEndianBytes(value.bitPattern))
    }

    mutating func bytes(_ field: Int, _ value: Data) {
        key(field, 2)
        varint(UInt64(value.count))
        data.append(value)
    }

    mutating func string(_ field: Int, _ value: String) { bytes(field, Data(value.utf8)) }

    mutating func message(_ field: Int, _ build: (inout ProtobufWriter) -> Void) {
        var nested = ProtobufWriter()
        build(&nested)
        bytes(field, nested.data)
    }
}

/// Reads the top-level fields of one protobuf message: varint and fixed64 values, and the bytes of
/// length-delimited ones (nested messages are read by another `ProtobufFields` over those bytes).
struct ProtobufFields {
    var varints: [Int: UInt64] = [:]
    var fixed64: [Int: UInt64] = [:]
    var lengthDelimited: [Int: [Data]] = [:]

    /// Nil when `data` is not a well-formed message.
    init?(_ data: Data) {
        let bytes = [UInt8](data)
        var offset = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0, shift: UInt64 = 0
            while offset < bytes.count, shift < 64 {
                let byte = bytes[offset]
                offset += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
            return nil
        }
        while offset < bytes.count {
            guard let key = varint() else { return nil }
            let field = Int(key >> 3)
            switch key & 7 {
            case 0:
                guard let value = varint() else { return nil }
                varints[field] = value
            case 1:
                guard bytes.count - offset >= 8 else { return nil }
                fixed64[field] = bytes[offset..<offset + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                offset += 8
            case 2:
                guard let length = varint(), length <= UInt64(bytes.count - offset) else { return nil }
                lengthDelimited[field, default: []].append(Data(bytes[offset..<offset + Int(length)]))
                offset += Int(length)
            case 5:
                guard bytes.count - offset >= 4 else { return nil }
                offset += 4
            default:
                return nil
            }
        }
    }
}
