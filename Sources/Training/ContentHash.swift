import ONNXGraph

/// 64-bit FNV-1a over file contents and strings: the key of the reference log-prob cache, which must change when
/// the model, the data, the tokenizer or the data options change. Not cryptographic; it only has to notice edits.
struct ContentHash {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var hash = value
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        value = hash
    }

    mutating func add(_ text: String) {
        var copy = text + "\u{0}"
        copy.withUTF8 { add(UnsafeRawBufferPointer($0)) }
    }

    /// The file's bytes (memory-mapped).
    mutating func add(file path: String) throws {
        let file = try MappedFile(path: path)
        add(file.bytes)
    }

    var hex: String { String(value, radix: 16) }
}
