import Foundation
import ONNXGraph

/// onnxruntime's LoRA adapter file (`.onnx_adapter`, onnxruntime ≥ 1.20 and onnxruntime-genai): named tensors
/// that a session binds to the model's LoRA inputs at run time (`onnxruntime.LoraAdapter().Load(path)`, then
/// `RunOptions.add_active_adapter`), so one exported model can switch adapters without being re-exported.
///
/// The file is a FlatBuffer (https://flatbuffers.dev/internals/) of onnxruntime's schema
/// `onnxruntime/lora/adapter_format/adapter_schema.fbs`, file identifier `"TORT"`:
///
///     table Adapter   { format_version: int; adapter_version: int; model_version: int; parameters: [Parameter]; }
///     table Parameter { name: string; dims: [int64]; data_type: TensorDataType (int32, onnx.proto's
///                       TensorProto.DataType); raw_data: [uint8] (force_align: 8); }
///
/// `format_version` is `kAdapterFormatVersion` of `onnxruntime/lora/adapter_format_version.h` (1, the only version
/// onnxruntime accepts); `adapter_version` and `model_version` are free integers for the user. `raw_data` holds
/// the values little-endian, row-major. The schema's field names and this file's FlatBuffer layout appear only here.
/// onnxruntime binds raw_data in place (no copy), so this writer honours `force_align: 8`; onnxruntime's own writer
/// (`AdapterFormatBuilder`, which calls `CreateVector` without `ForceVectorAlignment`) leaves it 4-aligned, so the
/// reader does not require it.
///
/// What onnxruntime 1.31 refuses on loading is refused here too, so a file this reader accepts is one onnxruntime
/// loads: a missing name, dims or raw_data, a parameter without dims (a scalar), raw_data whose length is not
/// `dims × element width`. Only floating-point parameters (float32, float16, bfloat16, float64) are read and
/// written: LoRA weights are never anything else.
public enum ONNXAdapterFile {
    /// The extension onnxruntime and onnxruntime-genai use.
    public static let fileExtension = "onnx_adapter"
    /// The FlatBuffer file identifier, bytes 4..<8 of every file.
    public static let fileIdentifier = "TORT"
    /// The format version onnxruntime's writer records and the only one its reader accepts
    /// (`kAdapterFormatVersion`, `onnxruntime/lora/adapter_format_version.h`).
    public static let formatVersion = 1

    /// A file's contents: parameters in file order, and the two user version numbers.
    public struct Contents: Sendable {
        /// Float tensors; `dataType` (`.float`, `.float16`, `.bfloat16`, `.double`) is the type stored in the file.
        public var parameters: [(name: String, tensor: Tensor)]
        /// The adapter's own version (onnxruntime stores it, never interprets it).
        public var adapterVersion: Int
        /// The version of the model the adapter was made for (stored, never interpreted).
        public var modelVersion: Int

        public init(parameters: [(name: String, tensor: Tensor)], adapterVersion: Int = 0, modelVersion: Int = 0) {
            self.parameters = parameters
            self.adapterVersion = adapterVersion
            self.modelVersion = modelVersion
        }

        /// The parameter called `name`, if the file has one.
        public subscript(name: String) -> Tensor? { parameters.first { $0.name == name }?.tensor }
    }

    /// Writes `contents` to `path` atomically (a temporary file beside it, renamed over it, so `path` never holds
    /// a partial file). Each tensor is written in its `dataType`: float32, float16 or bfloat16 (rounded to nearest
    /// even), or float64. Refused with `AdapterError.cannotWrite`: an empty or repeated name, a tensor that is not
    /// floating-point or has no dims (onnxruntime refuses scalars), versions outside Int32, a file over the 2 GiB
    /// a FlatBuffer can address.
    public static func write(_ contents: Contents, to path: String) throws {
        func fail(_ reason: String) -> AdapterError { .cannotWrite(path: path, reason: reason) }
        guard let adapterVersion = Int32(exactly: contents.adapterVersion),
              let modelVersion = Int32(exactly: contents.modelVersion) else {
            throw fail("adapter_version \(contents.adapterVersion) and model_version \(contents.modelVersion) must fit in Int32")
        }
        var seen = Set<String>()
        var parameters: [Parameter] = []
        var payloadBytes = 0
        for (name, tensor) in contents.parameters {
            guard !name.isEmpty else { throw fail("a parameter has an empty name (onnxruntime needs every parameter named)") }
            guard seen.insert(name).inserted else { throw fail("parameter name '\(name)' is repeated") }
            guard case .float(let values) = tensor.storage,
                  let width = storedWidth(tensor.dataType) else {
                throw fail("parameter '\(name)' is \(tensor.dataType); only float32, float16, bfloat16 and float64 are written")
            }
            guard !tensor.shape.isEmpty else {
                throw fail("parameter '\(name)' is a scalar; onnxruntime refuses parameters without dims (reshape it to [1])")
            }
            guard tensor.shape.allSatisfy({ $0 >= 0 }), values.count == tensor.count else {
                throw fail("parameter '\(name)' has shape \(tensor.shape) but \(values.count) values")
            }
            payloadBytes += values.count * width
            guard payloadBytes <= Int(Int32.max) else {
                throw fail("the parameters hold over 2 GiB, more than a FlatBuffer can address")
            }
            parameters.append(Parameter(name: name, dims: tensor.shape.map(Int64.init),
                                        dataType: tensor.dataType.rawValue, rawData: encode(values, as: tensor.dataType)))
        }
        let bytes = encode(formatVersion: Int32(formatVersion), adapterVersion: adapterVersion,
                           modelVersion: modelVersion, parameters: parameters)
        guard bytes.count <= Int(Int32.max) else { throw fail("the file would be over 2 GiB, more than a FlatBuffer can address") }
        try AtomicFile.write(Data(bytes), to: path)
    }

    /// Reads and validates `path` (memory-mapped): the identifier is "TORT"; every offset, table, vtable, vector
    /// and string lies inside the file, aligned as the FlatBuffers verifier onnxruntime runs requires; the format
    /// version is 1; every parameter has a unique non-empty name, dims (non-negative) and raw_data of exactly
    /// `dims × width` bytes of a floating-point type. Violations are `AdapterError.invalidAdapter` (or
    /// `.unsupportedAdapter` for another format version or element type) naming the file and the parameter.
    public static func read(path: String) throws -> Contents {
        guard FileManager.default.fileExists(atPath: path) else { throw AdapterError.adapterNotFound(path: path) }
        let file: MappedFile
        do {
            file = try MappedFile(path: path)
        } catch {
            throw AdapterError.invalidAdapter(path: path, reason: "cannot read: \(error)")
        }
        return try parse(file.bytes, path: path).contents
    }

    // MARK: Schema

    /// One `Parameter` table as stored; nil fields are left out of the table (for tests of malformed files).
    struct Parameter {
        var name: String?
        var dims: [Int64]?
        var dataType: Int32
        var rawData: [UInt8]?
    }

    /// The fields of `table Adapter`: raw value the field's index (its vtable slot), `name` the schema's name.
    private enum AdapterField: Int {
        case formatVersion, adapterVersion, modelVersion, parameters
        var name: String { ["format_version", "adapter_version", "model_version", "parameters"][rawValue] }
    }

    /// The fields of `table Parameter`, as `AdapterField`.
    private enum ParameterField: Int {
        case name, dims, dataType, rawData
        var name: String { ["name", "dims", "data_type", "raw_data"][rawValue] }
    }

    /// `raw_data`'s `force_align`: the values start 8-byte aligned, so a reader can use them in place.
    static let rawDataAlignment = 8

    /// Bytes per element of the floating-point types this file holds, nil for the others.
    private static func storedWidth(_ dataType: DataType) -> Int? {
        switch dataType {
        case .float: 4
        case .float16, .bfloat16: 2
        case .double: 8
        default: nil
        }
    }

    private static func encode(_ values: [Float], as dataType: DataType) -> [UInt8] {
        guard let bytes = TensorEncoding.raw(values, as: dataType) else { preconditionFailure("\(dataType) is checked before encoding") }
        return bytes
    }

    private static func decode(_ raw: UnsafeRawBufferPointer, as dataType: DataType, shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        // Loads are unaligned: onnxruntime's own writer does not apply force_align (its raw_data is 4-byte aligned).
        func floats<T: FixedWidthInteger>(_ type: T.Type, _ convert: (T) -> Float) -> [Float] {
            (0..<count).map { convert(T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))) }
        }
        let values = switch dataType {
        case .float16: floats(UInt16.self, halfToFloat)
        case .bfloat16: floats(UInt16.self, bfloat16ToFloat)
        case .double: floats(UInt64.self) { Float(Double(bitPattern: $0)) }
        default: floats(UInt32.self) { Float(bitPattern: $0) }
        }
        return Tensor(shape: shape, floats: values, dataType: dataType)
    }

    // MARK: Writing the FlatBuffer

    /// The FlatBuffer bytes of an `Adapter` with these fields (`parameters` nil leaves the vector out).
    ///
    /// Layout, front to back, so that every uoffset points forward as the format requires (each child is written
    /// after whatever refers to it): the root uoffset and "TORT"; the Adapter's vtable and table; the parameters
    /// vector; then per parameter its vtable, table, name, dims and raw_data. Each vtable sits right before its
    /// table (a positive soffset; vtables are not shared, which costs 12 bytes a parameter). Every field is 4 bytes
    /// (int32 or uoffset) at a 4-aligned position; strings and vectors start 4-aligned with their uint32 length;
    /// dims' int64 elements and raw_data's bytes start 8-aligned (natural alignment and force_align: 8), counted
    /// from the start of the buffer, which is how the FlatBuffers builder counts; the buffer's size is padded to
    /// a multiple of 8, as the builder pads to its largest alignment.
    static func encode(formatVersion: Int32, adapterVersion: Int32, modelVersion: Int32, parameters: [Parameter]?) -> [UInt8] {
        var buffer = FlatBufferWriter()
        let root = buffer.reserveOffset()
        buffer.bytes.append(contentsOf: Array(fileIdentifier.utf8))
        let adapter = buffer.table([.int32(formatVersion), .int32(adapterVersion), .int32(modelVersion),
                                    parameters == nil ? nil : .offset])
        buffer.patchOffset(at: root, to: adapter.table)
        guard let parameters, let parametersSlot = adapter.slots[AdapterField.parameters.rawValue] else {
            buffer.pad(to: 8)
            return buffer.bytes
        }
        buffer.patchOffset(at: parametersSlot, to: buffer.vectorHeader(count: parameters.count, elementAlignment: 4))
        let elementSlots = parameters.map { _ in buffer.reserveOffset() }
        for (parameter, elementSlot) in zip(parameters, elementSlots) {
            let table = buffer.table([parameter.name == nil ? nil : .offset, parameter.dims == nil ? nil : .offset,
                                      .int32(parameter.dataType), parameter.rawData == nil ? nil : .offset])
            buffer.patchOffset(at: elementSlot, to: table.table)
            if let name = parameter.name, let slot = table.slots[ParameterField.name.rawValue] {
                buffer.patchOffset(at: slot, to: buffer.vectorHeader(count: name.utf8.count, elementAlignment: 1))
                buffer.bytes.append(contentsOf: Array(name.utf8) + [0])
            }
            if let dims = parameter.dims, let slot = table.slots[ParameterField.dims.rawValue] {
                buffer.patchOffset(at: slot, to: buffer.vectorHeader(count: dims.count, elementAlignment: 8))
                dims.forEach { buffer.append($0) }
            }
            if let rawData = parameter.rawData, let slot = table.slots[ParameterField.rawData.rawValue] {
                buffer.patchOffset(at: slot, to: buffer.vectorHeader(count: rawData.count, elementAlignment: rawDataAlignment))
                buffer.bytes.append(contentsOf: rawData)
            }
        }
        buffer.pad(to: 8)
        return buffer.bytes
    }

    /// Appends little-endian FlatBuffer pieces front to back, patching forward offsets once their targets exist.
    private struct FlatBufferWriter {
        var bytes: [UInt8] = []

        /// A table field: an int32 value, or a uoffset to fill in with `patchOffset`.
        enum Field { case int32(Int32), offset }

        mutating func append<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }

        /// Zero bytes until `(count + before) % alignment == 0`.
        mutating func pad(to alignment: Int, before: Int = 0) {
            while (bytes.count + before) % alignment != 0 { bytes.append(0) }
        }

        /// A 4-aligned uoffset slot, zero until patched; returns its position.
        mutating func reserveOffset() -> Int {
            pad(to: 4)
            append(UInt32(0))
            return bytes.count - 4
        }

        /// Stores in the slot at `slot` the forward distance to `target` (uoffsets are relative to their own position).
        mutating func patchOffset(at slot: Int, to target: Int) {
            precondition(target > slot, "FlatBuffer offsets point forward")
            withUnsafeBytes(of: UInt32(target - slot).littleEndian) { bytes.replaceSubrange(slot..<(slot + 4), with: $0) }
        }

        /// The uint32 length of a vector or string, placed so that its elements start `elementAlignment`-aligned;
        /// returns the vector's position (that of its length).
        mutating func vectorHeader(count: Int, elementAlignment: Int) -> Int {
            pad(to: 4)
            pad(to: max(elementAlignment, 4), before: 4)
            append(UInt32(count))
            return bytes.count - 4
        }

        /// A vtable, then its table of 4-byte fields (nil: absent, offset 0 in the vtable). Returns the table's
        /// position and the position of each present field.
        mutating func table(_ fields: [Field?]) -> (table: Int, slots: [Int?]) {
            pad(to: 4)
            let vtable = bytes.count
            let presentCount = fields.compactMap { $0 }.count
            append(UInt16(4 + 2 * fields.count))  // vtable size in bytes
            append(UInt16(4 + 4 * presentCount))  // table size in bytes, soffset included
            var next = 4
            for field in fields {
                append(UInt16(field == nil ? 0 : next))
                if field != nil { next += 4 }
            }
            pad(to: 4)
            let table = bytes.count
            append(Int32(table - vtable))  // soffset: the vtable is at table - soffset
            var slots: [Int?] = []
            for field in fields {
                switch field {
                case .none: slots.append(nil)
                case .int32(let value)?: slots.append(bytes.count); append(value)
                case .offset?: slots.append(bytes.count); append(UInt32(0))
                }
            }
            return (table, slots)
        }
    }

    // MARK: Reading the FlatBuffer

    /// Parses the bytes of an adapter file (`path` only names it in errors); also returns where each parameter's
    /// raw_data values start, for tests of the alignment.
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> (contents: Contents, rawDataOffsets: [Int]) {
        func invalid(_ reason: String) -> AdapterError { .invalidAdapter(path: path, reason: reason) }
        guard bytes.count > 8 else {
            throw invalid("the file has \(bytes.count) bytes, too few for an onnxruntime adapter (truncated?)")
        }
        let identifier = Array(bytes[4..<8])
        guard identifier == Array(fileIdentifier.utf8) else {
            let shown = identifier.allSatisfy { (0x20..<0x7F).contains($0) }
                ? "\"\(String(decoding: identifier, as: UTF8.self))\""
                : identifier.map { String(format: "%02x", $0) }.joined(separator: " ")
            throw invalid("the file identifier (bytes 4..<8) is \(shown), not \"\(fileIdentifier)\": this is not an "
                + "onnxruntime adapter (.\(fileExtension)) file")
        }
        let reader = FlatBufferReader(bytes: bytes, fail: invalid)
        let adapter = try reader.table(at: reader.offset(at: 0, "the root offset"), "the Adapter table")
        func int32(_ field: AdapterField) throws -> Int32 {
            guard let position = try reader.field(field.rawValue, width: 4, of: adapter, field.name) else { return 0 }
            return reader.load(Int32.self, at: position)
        }
        let version = try int32(.formatVersion)
        guard version == Int32(formatVersion) else {
            throw AdapterError.unsupportedAdapter(path: path, reason: "format_version is \(version); onnxruntime (1.20 to "
                + "1.31 at least) and this reader know only version \(formatVersion)")
        }
        let adapterVersion = try int32(.adapterVersion)
        let modelVersion = try int32(.modelVersion)
        guard let parametersField = try reader.field(AdapterField.parameters.rawValue, width: 4, of: adapter, "parameters") else {
            throw invalid("the Adapter table has no parameters vector (onnxruntime needs one, even if empty)")
        }
        let parameters = try reader.vector(at: reader.offset(at: parametersField, "the parameters offset"),
                                           elementWidth: 4, "the parameters vector")

        var result: [(name: String, tensor: Tensor)] = []
        var rawDataOffsets: [Int] = []
        var seen = Set<String>()
        for index in 0..<parameters.count {
            let table = try reader.table(at: reader.offset(at: parameters.elements + 4 * index, "parameter #\(index)'s offset"),
                                         "parameter #\(index)'s table")
            func field(_ field: ParameterField, _ label: String) throws -> Int? {
                try reader.field(field.rawValue, width: 4, of: table, "\(label)'s \(field.name)")
            }
            guard let nameField = try field(.name, "parameter #\(index)") else {
                throw invalid("parameter #\(index) has no name (onnxruntime refuses unnamed parameters)")
            }
            let name = try reader.string(at: reader.offset(at: nameField, "parameter #\(index)'s name offset"),
                                         "parameter #\(index)'s name")
            guard !name.isEmpty else { throw invalid("parameter #\(index) has an empty name") }
            let label = "parameter '\(name)'"
            guard seen.insert(name).inserted else { throw invalid("\(label) appears twice") }

            guard let dimsField = try field(.dims, label) else { throw invalid("\(label) has no dims") }
            let dims = try reader.vector(at: reader.offset(at: dimsField, "\(label)'s dims offset"), elementWidth: 8, "\(label)'s dims")
            let shape = (0..<dims.count).map { reader.load(Int64.self, at: dims.elements + 8 * $0) }
            guard !shape.isEmpty else { throw invalid("\(label) has empty dims (onnxruntime refuses scalars)") }
            guard shape.allSatisfy({ $0 >= 0 && $0 <= Int64(Int32.max) }) else {
                throw invalid("\(label) has dims \(shape), not all between 0 and 2^31")
            }

            let code = try field(.dataType, label).map { reader.load(Int32.self, at: $0) } ?? 0
            guard let dataType = DataType(rawValue: code), dataType != .undefined else {
                throw invalid("\(label) has data_type \(code), which is not an ONNX tensor type this reader knows")
            }
            guard let width = storedWidth(dataType) else {
                throw AdapterError.unsupportedAdapter(path: path, reason: "\(label) is \(dataType) (data_type \(code)); only "
                    + "floating-point LoRA weights (float32, float16, bfloat16, float64) are read")
            }

            guard let rawField = try field(.rawData, label) else { throw invalid("\(label) has no raw_data") }
            let raw = try reader.vector(at: reader.offset(at: rawField, "\(label)'s raw_data offset"), elementWidth: 1,
                                        "\(label)'s raw_data")
            var byteCount = shape.contains(0) ? 0 : width
            for dimension in shape where byteCount > 0 {
                let (product, overflow) = byteCount.multipliedReportingOverflow(by: Int(dimension))
                guard !overflow, product <= bytes.count else {
                    throw invalid("\(label) has dims \(shape), more values than the file can hold")
                }
                byteCount = product
            }
            guard raw.count == byteCount else {
                throw invalid("\(label) has \(raw.count) bytes of raw_data, but \(dataType) \(shape) needs \(byteCount)")
            }
            let values = UnsafeRawBufferPointer(rebasing: bytes[raw.elements..<(raw.elements + raw.count)])
            result.append((name, decode(values, as: dataType, shape: shape.map { Int($0) })))
            rawDataOffsets.append(raw.elements)
        }
        let contents = Contents(parameters: result, adapterVersion: Int(adapterVersion), modelVersion: Int(modelVersion))
        return (contents, rawDataOffsets)
    }

    /// Bounds- and alignment-checked reads of a FlatBuffer, mirroring the checks of `flatbuffers::Verifier` that
    /// onnxruntime runs before it reads an adapter: every scalar inside the buffer and aligned to its size, uoffsets
    /// nonzero and below 2^31, vtables 2-aligned with an even size, strings NUL-terminated.
    private struct FlatBufferReader {
        let bytes: UnsafeRawBufferPointer
        let fail: (String) -> AdapterError

        /// A table: its position, its vtable's position, and both sizes from the vtable.
        struct Table { var position: Int; var vtable: Int; var vtableSize: Int; var tableSize: Int }

        /// `size` bytes at `position` lie in the file and `position` is a multiple of `alignment`.
        func check(_ position: Int, size: Int, alignment: Int, _ what: String) throws {
            guard position >= 0, size >= 0, position <= bytes.count - size else {
                throw fail("\(what) (byte \(position), \(size) bytes) runs past the end of the file (\(bytes.count) bytes; truncated?)")
            }
            guard position % alignment == 0 else {
                throw fail("\(what) at byte \(position) is not \(alignment)-byte aligned, as FlatBuffers requires")
            }
        }

        /// The little-endian value at `position`, which `check` has validated.
        func load<T: FixedWidthInteger>(_ type: T.Type, at position: Int) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        }

        /// The position a uoffset at `position` points to.
        func offset(at position: Int, _ what: String) throws -> Int {
            try check(position, size: 4, alignment: 4, what)
            let value = load(UInt32.self, at: position)
            guard value != 0, value < 1 << 31 else { throw fail("\(what) at byte \(position) is \(value), not a valid offset") }
            let target = position + Int(value)
            guard target < bytes.count else {
                throw fail("\(what) at byte \(position) points to byte \(target), past the end of the file (\(bytes.count) bytes; truncated?)")
            }
            return target
        }

        func table(at position: Int, _ what: String) throws -> Table {
            try check(position, size: 4, alignment: 4, what)
            let vtable = position - Int(load(Int32.self, at: position))
            try check(vtable, size: 4, alignment: 2, "\(what)'s vtable")
            let vtableSize = Int(load(UInt16.self, at: vtable))
            let tableSize = Int(load(UInt16.self, at: vtable + 2))
            guard vtableSize >= 4, vtableSize % 2 == 0, tableSize >= 4 else {
                throw fail("\(what)'s vtable at byte \(vtable) has sizes \(vtableSize) and \(tableSize), which are not valid")
            }
            try check(vtable, size: vtableSize, alignment: 2, "\(what)'s vtable")
            try check(position, size: tableSize, alignment: 4, what)
            return Table(position: position, vtable: vtable, vtableSize: vtableSize, tableSize: tableSize)
        }

        /// The position of field `index` (a `width`-byte scalar or uoffset) of `table`, nil when it is absent.
        func field(_ index: Int, width: Int, of table: Table, _ what: String) throws -> Int? {
            let slot = 4 + 2 * index
            guard slot + 2 <= table.vtableSize else { return nil }
            let offset = Int(load(UInt16.self, at: table.vtable + slot))
            guard offset != 0 else { return nil }
            guard offset >= 4, offset + width <= table.tableSize else {
                throw fail("\(what) lies outside its table (offset \(offset), table size \(table.tableSize))")
            }
            try check(table.position + offset, size: width, alignment: width, what)
            return table.position + offset
        }

        /// A vector's element count and the position of its first element.
        func vector(at position: Int, elementWidth: Int, _ what: String) throws -> (count: Int, elements: Int) {
            try check(position, size: 4, alignment: 4, "\(what)'s length")
            let count = Int(load(UInt32.self, at: position))
            let (size, overflow) = count.multipliedReportingOverflow(by: elementWidth)
            guard !overflow else { throw fail("\(what) claims \(count) elements, too many") }
            try check(position + 4, size: size, alignment: 1, "\(what) (\(count) elements)")
            return (count, position + 4)
        }

        /// A NUL-terminated UTF-8 string.
        func string(at position: Int, _ what: String) throws -> String {
            let (count, start) = try vector(at: position, elementWidth: 1, what)
            try check(start + count, size: 1, alignment: 1, "\(what)'s terminating NUL")
            guard bytes[start + count] == 0 else { throw fail("\(what) is not NUL-terminated") }
            guard let text = String(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]), encoding: .utf8) else {
                throw fail("\(what) is not valid UTF-8")
            }
            return text
        }
    }
}
