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
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(headerBytes))
        } catch let problem as HeaderProblem {
            throw fail(problem.reason, tensor: problem.tensor)
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw fail("the header is not a JSON object")
        } catch {
            throw fail("the header is not valid JSON (\(error))")
        }
        let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart...])
        let metadata = header.metadata

        struct Entry { var name: String; var dtype: String; var dataType: DataType; var shape: [Int]; var range: Range<Int> }
        var entries: [Entry] = []
        for (name, info) in header.entries {
            guard let (dataType, width) = dataType(of: info.dtype) else {
                throw fail("dtype \(info.dtype) is not supported (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL are)", tensor: name)
            }
            let shape = info.shape
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("shape \(shape) has a dimension that is not a non-negative integer", tensor: name)
            }
            let (begin, end) = (info.dataOffsets[0], info.dataOffsets[1])
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
                throw fail("data_offsets [\(begin), \(end)] hold \(end - begin) bytes, but \(info.dtype) \(shape) needs \(byteCount)",
                           tensor: name)
            }
            entries.append(Entry(name: name, dtype: info.dtype, dataType: dataType, shape: shape, range: begin..<end))
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

    /// Writes `tensors` to `path`, their data in the given order, atomically: the bytes go to a temporary file in the same
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
        var payload = Data()
        var header = Header(metadata: metadata)
        for (name, tensor) in tensors {
            let begin = payload.count
            let dtype = encode(tensor, into: &payload)
            header.entries.append((name, TensorInfo(dtype: dtype, shape: tensor.shape, dataOffsets: [begin, payload.count])))
        }
        let encoder = JSONEncoder()
        // Sorted keys: the same tensors always give the same bytes (the data keeps the given order).
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var headerBytes = [UInt8](try encoder.encode(header))
        // Pad the header with spaces so that the data starts 8-byte aligned, as the reference writer does.
        headerBytes += [UInt8](repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)
        var file = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: headerBytes)
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
        case .int8, .uint8: return Tensor(shape: shape, bytes: [UInt8](raw[..<count]), dataType: dataType)
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
        case .bytes(let values):
            data.append(contentsOf: values)
            return tensor.dataType == .int8 ? "I8" : "U8"
        case .bool(let values):
            data.append(contentsOf: values.map { $0 ? 1 : 0 })
            return "BOOL"
        }
    }
}

// MARK: - The header

extension SafeTensors {
    /// One tensor's header entry, the format's key names verbatim.
    struct TensorInfo: Codable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]
        enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
    }

    /// Why a header is refused, and for which tensor.
    struct HeaderProblem: Error {
        var reason: String
        var tensor: String?
    }

    /// The JSON header: `__metadata__` and one entry per tensor (written with sorted keys; the data offsets keep
    /// the tensors' order).
    struct Header: Codable {
        var metadata: [String: String] = [:]
        var entries: [(name: String, info: TensorInfo)] = []

        init(metadata: [String: String]) { self.metadata = metadata }

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(_ string: String) { stringValue = string }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        static let metadataKey = "__metadata__"

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                if key.stringValue == Self.metadataKey {
                    guard let strings = try? container.decode([String: JSONScalar].self, forKey: key) else {
                        throw HeaderProblem(reason: "__metadata__ is not an object")
                    }
                    for (name, value) in strings {
                        guard case .string(let text) = value else { throw HeaderProblem(reason: "__metadata__ '\(name)' is not a string") }
                        metadata[name] = text
                    }
                    continue
                }
                let name = key.stringValue
                let entry = try container.nestedContainer(keyedBy: TensorInfo.CodingKeys.self, forKey: key, orElse: name)
                guard let dtype = try? entry.decode(String.self, forKey: .dtype) else {
                    throw HeaderProblem(reason: "no \"dtype\" string", tensor: name)
                }
                guard let shapeValues = try? entry.decode([JSONScalar].self, forKey: .shape) else {
                    throw HeaderProblem(reason: "no \"shape\" array", tensor: name)
                }
                let shape = shapeValues.compactMap(\.integer)
                guard shape.count == shapeValues.count else {
                    throw HeaderProblem(reason: "shape \(shapeValues.map(\.description)) has a dimension that is not a non-negative integer",
                                        tensor: name)
                }
                guard let offsets = try? entry.decode([Int].self, forKey: .dataOffsets), offsets.count == 2 else {
                    throw HeaderProblem(reason: "\"data_offsets\" is not a pair of integers", tensor: name)
                }
                entries.append((name, TensorInfo(dtype: dtype, shape: shape, dataOffsets: offsets)))
            }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            if !metadata.isEmpty {
                var strings = container.nestedContainer(keyedBy: Key.self, forKey: Key(Self.metadataKey))
                for (name, value) in metadata.sorted(by: { $0.key < $1.key }) { try strings.encode(value, forKey: Key(name)) }
            }
            for (name, info) in entries { try container.encode(info, forKey: Key(name)) }
        }
    }

    /// A JSON string, integer or other value inside the header, for messages that quote what was there.
    enum JSONScalar: Decodable, CustomStringConvertible {
        case string(String)
        case number(Double)
        case other

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                self = .string(text)
            } else if let number = try? container.decode(Double.self) {
                self = .number(number)
            } else {
                self = .other
            }
        }

        /// The value as an exact integer, if it is one.
        var integer: Int? {
            guard case .number(let number) = self, number == number.rounded(), abs(number) < 1e15 else { return nil }
            return Int(number)
        }

        var description: String {
            switch self {
            case .string(let text): "\"\(text)\""
            case .number(let number): integer.map(String.init) ?? "\(number)"
            case .other: "…"
            }
        }
    }
}

extension KeyedDecodingContainer where Key == SafeTensors.Header.Key {
    /// The object under `key`, or a `HeaderProblem` saying the tensor's entry is not an object.
    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key, orElse tensor: String) throws -> KeyedDecodingContainer<NestedKey> {
        do {
            return try nestedContainer(keyedBy: type, forKey: key)
        } catch {
            throw SafeTensors.HeaderProblem(reason: "its header entry is not an object", tensor: tensor)
        }
    }
}
