#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ONNXGraph

/// The safetensors file format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
/// header length `N`, `N` bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
/// {string: string}}`, then the tensors' raw little-endian bytes, with offsets relative to the start of that data.
///
/// Floating-point tensors (F32, F16, BF16, F64) are read as float32 `Tensor`s whose `dataType` remembers the
/// stored type; integer tensors (I64, I32, I16, I8, U8) as `Int64`, BOOL as `Bool`. The safetensors dtype names
/// (`"F32"`, `"BF16"`, ...) appear only in this file.
public enum SafeTensors {
    /// A safetensors file's contents: tensors in the order of their data, and the `__metadata__` strings.
    public struct File: Sendable {
        public var tensors: [(name: String, tensor: Tensor)]
        public var metadata: [String: String]

        public init(tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:]) {
            self.tensors = tensors
            self.metadata = metadata
        }

        /// The tensor called `name`, if the file has one.
        public subscript(name: String) -> Tensor? { tensors.first { $0.name == name }?.tensor }
    }

    /// The largest header accepted, as in the reference implementation (100 MB): a bigger length is corruption.
    static let maximumHeaderLength = 100_000_000

    /// Reads and validates `path` (memory-mapped): the header length lies inside the file, the header is a JSON
    /// object, every tensor has a known dtype, a non-negative shape and offsets that lie inside the data, match
    /// `dtype × shape`, and neither overlap nor leave bytes between or after them (as the reference reader
    /// requires). Each violation is a `AdapterError.invalidSafeTensors` naming the file and the tensor.
    public static func read(path: String) throws -> File {
        let file: MappedFile
        do {
            file = try MappedFile(path: path)
        } catch {
            throw AdapterError.invalidSafeTensors(path: path, reason: "cannot read: \(error)")
        }
        return try parse(file.bytes, path: path)
    }

    /// Parses the bytes of a safetensors file (`path` only names it in errors).
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> File {
        func fail(_ reason: String, tensor: String? = nil) -> AdapterError {
            .invalidSafeTensors(path: path, reason: tensor.map { "tensor '\($0)': \(reason)" } ?? reason)
        }
        guard bytes.count >= 8 else {
            throw fail("the file has \(bytes.count) bytes, fewer than the 8 of the header length (truncated?)")
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("the header length \(headerLength) runs past the end of the file (\(bytes.count) bytes; truncated?)")
        }
        guard headerLength <= UInt64(maximumHeaderLength) else {
            throw fail("the header length \(headerLength) is over the \(maximumHeaderLength)-byte limit")
        }
        let dataStart = 8 + Int(headerLength)
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail("the header does not start with '{'") }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes))
        } catch {
            throw fail("the header is not valid JSON (\(error.localizedDescription))")
        }
        guard let header = json as? [String: Any] else { throw fail("the header is not a JSON object") }
        let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart...])

        var metadata: [String: String] = [:]
        if let value = header["__metadata__"] {
            guard let strings = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
            for (key, value) in strings {
                guard let string = value as? String else { throw fail("__metadata__ '\(key)' is not a string") }
                metadata[key] = string
            }
        }

        struct Entry { var name: String; var dtype: String; var dataType: DataType; var shape: [Int]; var range: Range<Int> }
        var entries: [Entry] = []
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any] else { throw fail("its header entry is not an object", tensor: name) }
            guard let dtype = info["dtype"] as? String else { throw fail("no \"dtype\" string", tensor: name) }
            guard let (dataType, width) = dataType(of: dtype) else {
                throw fail("dtype \(dtype) is not supported (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL are)", tensor: name)
            }
            guard let shapeValues = info["shape"] as? [Any] else { throw fail("no \"shape\" array", tensor: name) }
            var shape: [Int] = []
            for value in shapeValues {
                guard let dimension = integer(value), dimension >= 0 else {
                    throw fail("shape \(shapeValues) has a dimension that is not a non-negative integer", tensor: name)
                }
                shape.append(dimension)
            }
            guard let offsets = info["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = integer(offsets[0]), let end = integer(offsets[1]) else {
                throw fail("\"data_offsets\" is not a pair of integers", tensor: name)
            }
            guard begin >= 0, begin <= end, end <= data.count else {
                throw fail("data_offsets [\(begin), \(end)] lie outside the \(data.count) bytes of data (truncated?)", tensor: name)
            }
            var byteCount = width
            for dimension in shape {
                let (product, overflow) = byteCount.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw fail("shape \(shape) is too large", tensor: name) }
                byteCount = product
            }
            guard end - begin == byteCount else {
                throw fail("data_offsets [\(begin), \(end)] hold \(end - begin) bytes, but \(dtype) \(shape) needs \(byteCount)",
                           tensor: name)
            }
            entries.append(Entry(name: name, dtype: dtype, dataType: dataType, shape: shape, range: begin..<end))
        }

        // Data order; an empty tensor may share its offset with the next. The data must be covered exactly.
        entries.sort { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }
        var covered = 0
        var previous: String?
        for entry in entries {
            if entry.range.lowerBound < covered {
                throw fail("data_offsets [\(entry.range.lowerBound), \(entry.range.upperBound)] overlap tensor '\(previous ?? "")'",
                           tensor: entry.name)
            }
            if entry.range.lowerBound > covered {
                throw fail("bytes \(covered)..<\(entry.range.lowerBound) of the data before it belong to no tensor", tensor: entry.name)
            }
            covered = entry.range.upperBound
            previous = entry.name
        }
        guard covered == data.count else {
            throw fail("the last \(data.count - covered) bytes of the data belong to no tensor")
        }

        let tensors = entries.map { entry in
            (name: entry.name, tensor: decode(UnsafeRawBufferPointer(rebasing: data[entry.range]), dataType: entry.dataType,
                                              shape: entry.shape))
        }
        return File(tensors: tensors, metadata: metadata)
    }

    /// Writes `tensors` to `path`, in the given order, atomically: the bytes go to a temporary file in the same
    /// folder, which is then renamed over `path`, so `path` never holds a partial file. Float tensors are written
    /// as F32, or as F16 / BF16 when that is their `dataType` (rounded to nearest even); integer tensors as I64
    /// (I32 when their `dataType` is int32); bool as BOOL. `path` must not be a folder; its folder must exist.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:], to path: String) throws {
        var seen = Set<String>()
        for (name, _) in tensors {
            guard name != "__metadata__", seen.insert(name).inserted else {
                throw AdapterError.cannotWrite(path: path, reason: "tensor name '\(name)' is reserved or repeated")
            }
        }
        var header = "{"
        if !metadata.isEmpty {
            header += "\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }
                .map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",") + "},"
        }
        var payload = Data()
        for (index, (name, tensor)) in tensors.enumerated() {
            let begin = payload.count
            let dtype = encode(tensor, into: &payload)
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            header += (index == 0 ? "" : ",") + "\(jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape)],"
                + "\"data_offsets\":[\(begin),\(payload.count)]}"
        }
        if header.hasSuffix(",") { header.removeLast() }
        header += "}"
        // Pad the header with spaces so that the data starts 8-byte aligned, as the reference writer does.
        header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        var file = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: Array(header.utf8))
        file.append(payload)
        try AtomicFile.write(file, to: path)
    }

    /// The `Tensor` type and byte width of a safetensors dtype name, or nil if unsupported.
    static func dataType(of dtype: String) -> (DataType, Int)? {
        switch dtype {
        case "F32": (.float, 4)
        case "F16": (.float16, 2)
        case "BF16": (.bfloat16, 2)
        case "F64": (.double, 8)
        case "I64": (.int64, 8)
        case "I32": (.int32, 4)
        case "I16": (.int16, 2)
        case "I8": (.int8, 1)
        case "U8": (.uint8, 1)
        case "BOOL": (.bool, 1)
        default: nil
        }
    }

    /// A JSON number that is an exact integer, as `Int`.
    private static func integer(_ value: Any) -> Int? { value as? Int }

    private static func decode(_ raw: UnsafeRawBufferPointer, dataType: DataType, shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        func floats<T>(_ type: T.Type, _ convert: (T) -> Float) -> [Float] {
            (0..<count).map { convert(raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
        }
        func integers<T: FixedWidthInteger>(_ type: T.Type) -> [Int64] {
            (0..<count).map { Int64(T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))) }
        }
        switch dataType {
        case .float: return Tensor(shape: shape, floats: floats(UInt32.self) { Float(bitPattern: UInt32(littleEndian: $0)) })
        case .float16: return Tensor(shape: shape, floats: floats(UInt16.self) { halfToFloat(UInt16(littleEndian: $0)) }, dataType: .float16)
        case .bfloat16: return Tensor(shape: shape, floats: floats(UInt16.self) { bfloat16ToFloat(UInt16(littleEndian: $0)) }, dataType: .bfloat16)
        case .double: return Tensor(shape: shape, floats: floats(UInt64.self) { Float(Double(bitPattern: UInt64(littleEndian: $0))) }, dataType: .double)
        case .int32: return Tensor(shape: shape, int64s: integers(Int32.self), dataType: .int32)
        case .int16: return Tensor(shape: shape, int64s: integers(Int16.self), dataType: .int16)
        case .int8: return Tensor(shape: shape, int64s: integers(Int8.self), dataType: .int8)
        case .uint8: return Tensor(shape: shape, int64s: integers(UInt8.self), dataType: .uint8)
        case .bool: return Tensor(shape: shape, bools: (0..<count).map { raw[$0] != 0 })
        default: return Tensor(shape: shape, int64s: integers(Int64.self))
        }
    }

    /// Appends `tensor`'s bytes (little-endian) and returns the dtype name they were written as.
    private static func encode(_ tensor: Tensor, into data: inout Data) -> String {
        func append<T: FixedWidthInteger>(_ values: some Sequence<T>) {
            for value in values { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        }
        switch tensor.storage {
        case .float(let values):
            switch tensor.dataType {
            case .float16: append(values.lazy.map(floatToHalf)); return "F16"
            case .bfloat16: append(values.lazy.map(floatToBFloat16)); return "BF16"
            default: append(values.lazy.map(\.bitPattern)); return "F32"
            }
        case .int64(let values):
            if tensor.dataType == .int32 {
                append(values.lazy.map { Int32(truncatingIfNeeded: $0) })
                return "I32"
            }
            append(values)
            return "I64"
        case .bool(let values):
            data.append(contentsOf: values.map { $0 ? 1 : 0 })
            return "BOOL"
        }
    }
}

/// A JSON string literal for `text` (RFC 8259 escaping).
func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20:
            result += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                + String(scalar.value, radix: 16)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
