import Foundation

/// TFRecord framing (TensorFlow's `record_writer.cc`), the container of TensorBoard event files: each record is
/// `uint64 length` (little-endian), `uint32 masked CRC32C of the length bytes`, the data, `uint32 masked CRC32C of
/// the data`.
public enum TFRecord {
    /// One record around `data`.
    public static func frame(_ data: Data) -> Data {
        var record = Data(capacity: data.count + 16)
        let length = littleEndianBytes(UInt64(data.count))
        record.append(contentsOf: length)
        record.append(contentsOf: littleEndianBytes(CRC32C.masked(length)))
        record.append(data)
        record.append(contentsOf: littleEndianBytes(CRC32C.masked(data)))
        return record
    }

    /// The records of `file`, in order, up to the first one that is cut short or fails its checksums (a writer
    /// killed mid-record leaves such a tail; what precedes it is intact).
    public static func records(in file: Data) -> [Data] {
        let bytes = [UInt8](file)
        var records: [Data] = []
        var offset = 0
        while bytes.count - offset >= 16 {
            let lengthBytes = bytes[offset..<offset + 8]
            guard CRC32C.masked(lengthBytes) == readUInt32(bytes, at: offset + 8) else { break }
            let length = lengthBytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard length <= UInt64(bytes.count - offset - 16) else { break }
            let start = offset + 12, end = start + Int(length)
            guard CRC32C.masked(bytes[start..<end]) == readUInt32(bytes, at: end) else { break }
            records.append(Data(bytes[start..<end]))
            offset = end + 4
        }
        return records
    }

    private static func readUInt32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<T.bitWidth / 8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }
}
