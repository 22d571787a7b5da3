import Foundation
import ZIPFoundation

/// NumPy's `.npz` archives (a zip of `.npy` files, stored or deflated), read and written as named tensors.
///
/// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html — a `.npy` file is the magic
/// `\x93NUMPY`, a version, a little-endian header length, a Python dict literal with `descr`, `fortran_order` and
/// `shape`, then the raw C-order data.
public enum NPZ {
    /// Reads every array in the archive at `path`, keyed by name (the entry name without `.npy`).
    public static func read(path: String) throws(GraphError) -> [String: Tensor] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw .unreadableFile(path: path, reason: "no such file")
        }
        let archive: Archive
        do {
            archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw .invalidNPZ(path: path, reason: "not a zip archive (.npz): \(error)")
        }
        let archiveSize = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
        var result: [String: Tensor] = [:]
        for entry in archive where entry.type == .file {
            // ZIPFoundation reads an entry's declared size in chunks, going on past the end of the file, so a size
            // no archive this short can hold (a corrupt ZIP64 field says 2^63 bytes) would loop practically forever.
            let stored = entry.isCompressed ? entry.compressedSize : max(entry.compressedSize, entry.uncompressedSize)
            guard stored <= archiveSize else {
                throw .invalidNPZ(path: path, reason:
                    "entry '\(entry.path)' claims \(stored) bytes, more than the whole archive's \(archiveSize)")
            }
            var data = Data()
            do {
                _ = try archive.extract(entry, skipCRC32: false) { data.append($0) }
            } catch {
                throw .invalidNPZ(path: path, reason: "entry '\(entry.path)' cannot be extracted: \(error)")
            }
            let name = entry.path.hasSuffix(".npy") ? String(entry.path.dropLast(4)) : entry.path
            result[name] = try parseNPY(data, name: name, path: path)
        }
        return result
    }

    /// Writes `tensors` to `path` as an uncompressed `.npz`, through a temporary file renamed into place.
    /// Each tensor is written in its own type (bfloat16, which NumPy lacks, as float32).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], path: String) throws(GraphError) {
        try AtomicFile.write(to: path) { (temporary) throws(GraphError) in
            do {
                let archive = try Archive(url: URL(fileURLWithPath: temporary), accessMode: .create)
                for (name, tensor) in tensors {
                    let data = npyData(tensor)
                    try archive.addEntry(with: name + ".npy", type: .file, uncompressedSize: Int64(data.count),
                                         compressionMethod: .none) { position, size in
                        data.subdata(in: Int(position)..<(Int(position) + size))
                    }
                }
            } catch {
                throw .cannotWrite(path: path, reason: "\(error)")
            }
        }
    }

    // MARK: - .npy

    /// NumPy `descr` codes (little-endian or byte-order-free) and the ONNX type each holds.
    private static let descrTypes: [String: DataType] = [
        "f4": .float, "f2": .float16, "f8": .double, "i1": .int8, "u1": .uint8, "i2": .int16, "u2": .uint16,
        "i4": .int32, "u4": .uint32, "i8": .int64, "u8": .uint64, "b1": .bool,
    ]

    static func parseNPY(_ data: Data, name: String, path: String) throws(GraphError) -> Tensor {
        func fail(_ reason: String) -> GraphError { .invalidNPZ(path: path, reason: "array '\(name)': \(reason)") }
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw fail("not a .npy array (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw fail("unsupported .npy version \(major)")
        }
        guard bytes.count >= headerStart + headerLength else { throw fail("truncated header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard let descr = field("descr", in: header), let shapeText = field("shape", in: header) else {
            throw fail("header has no descr or shape: \(header)")
        }
        if field("fortran_order", in: header) == "True" {
            throw fail("Fortran-order arrays are not supported; save with np.ascontiguousarray")
        }
        let byteOrder = descr.first
        let code = String(descr.dropFirst())
        guard byteOrder == "<" || byteOrder == "|" || byteOrder == "=", let dataType = descrTypes[code] else {
            throw fail("dtype '\(descr)' is not supported (expected little-endian float16/32/64, int8-64, uint8-64 or bool)")
        }
        let shapeItems = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "() "))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for item in shapeItems {
            guard let dimension = Int(item), dimension >= 0 else { throw fail("bad shape \(shapeText)") }
            shape.append(dimension)
        }
        let payload = Data(bytes[(headerStart + headerLength)...])
        do {
            return try payload.withUnsafeBytes { raw throws(GraphError) in
                try TensorDecoding.decode(raw: raw, dataType: dataType, shape: shape, name: name)
            }
        } catch {
            throw fail("\(error)")
        }
    }

    /// The text of `'key': value` in a .npy header dict (a tuple for `shape`, a quoted string for `descr`).
    private static func field(_ key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: "'\(key)'") else { return nil }
        var rest = header[keyRange.upperBound...].drop { $0 == " " || $0 == ":" }
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { return nil }
            return String(rest[...close])
        }
        if rest.first == "'" {
            rest = rest.dropFirst()
            guard let close = rest.firstIndex(of: "'") else { return nil }
            return String(rest[..<close])
        }
        let end = rest.firstIndex { $0 == "," || $0 == "}" } ?? rest.endIndex
        return rest[..<end].trimmingCharacters(in: .whitespaces)
    }

    static func npyData(_ tensor: Tensor) -> Data {
        let descr: String
        var payload = Data()
        switch tensor.storage {
        case .float(let values):
            switch tensor.dataType {
            case .double:
                descr = "<f8"
                values.forEach { appendLittleEndian(Double($0).bitPattern, to: &payload) }
            case .float16:
                descr = "<f2"
                values.forEach { appendLittleEndian(floatToHalf($0), to: &payload) }
            default:
                descr = "<f4"
                payload = values.withUnsafeBytes { Data($0) }
            }
        case .int64(let values):
            switch tensor.dataType {
            case .int32: descr = "<i4"; values.forEach { appendLittleEndian(UInt32(truncatingIfNeeded: $0), to: &payload) }
            case .int16: descr = "<i2"; values.forEach { appendLittleEndian(UInt16(truncatingIfNeeded: $0), to: &payload) }
            case .uint16: descr = "<u2"; values.forEach { appendLittleEndian(UInt16(truncatingIfNeeded: $0), to: &payload) }
            case .uint32: descr = "<u4"; values.forEach { appendLittleEndian(UInt32(truncatingIfNeeded: $0), to: &payload) }
            case .uint64: descr = "<u8"; payload = values.withUnsafeBytes { Data($0) }
            default: descr = "<i8"; payload = values.withUnsafeBytes { Data($0) }
            }
        case .bytes(let values):
            descr = tensor.dataType == .int8 ? "|i1" : "|u1"
            payload = Data(values)
        case .bool(let values):
            descr = "|b1"
            payload = Data(values.map { $0 ? 1 : 0 })
        }
        let shapeText = tensor.shape.isEmpty ? "()"
            : tensor.shape.count == 1 ? "(\(tensor.shape[0]),)"
            : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        appendLittleEndian(UInt16(header.utf8.count), to: &data)
        data.append(contentsOf: Array(header.utf8))
        data.append(payload)
        return data
    }

    private static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to data: inout Data) {
        withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) }
    }
}

/// `Float` to IEEE 754 half precision bits, rounding to nearest even (overflow gives infinity).
public func floatToHalf(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exponent = Int((bits >> 23) & 0xFF)
    var mantissa = bits & 0x7F_FFFF
    if exponent == 0xFF {
        return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0)
    }
    let halfExponent = exponent - 127 + 15
    if halfExponent >= 31 { return sign | 0x7C00 }
    if halfExponent <= 0 {
        // Subnormal half (or zero): shift the mantissa, with its implicit bit, into place with rounding.
        if halfExponent < -10 { return sign }
        mantissa |= 0x80_0000
        let shift = UInt32(14 - halfExponent)
        var half = mantissa >> shift
        let remainder = mantissa & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if remainder > halfway || (remainder == halfway && (half & 1) == 1) { half += 1 }
        return sign | UInt16(half)
    }
    var half = UInt32(halfExponent) << 10 | (mantissa >> 13)
    let remainder = mantissa & 0x1FFF
    if remainder > 0x1000 || (remainder == 0x1000 && (half & 1) == 1) { half += 1 }
    return sign | UInt16(half)
}
