/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode` in openai/gpt-2 `encoder.py`):
/// the printable Latin-1 bytes `!`..`~`, `¡`..`¬`, `®`..`ÿ` stand for themselves, and the other 68 bytes, in
/// increasing order, become U+0100, U+0101, … (so the space 0x20 is `Ġ` U+0120 and the newline 0x0A is `Ċ` U+010A).
enum ByteLevelTable {
    /// The character each byte becomes.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The UTF-8 encoding of each byte's character, to build mapped strings without going through `Character`.
    static let byteToUTF8: [[UInt8]] = byteToScalar.map { Array(String($0).utf8) }

    /// The byte each mapped character stands for.
    static let scalarToByte: [UInt32: UInt8] = {
        var table: [UInt32: UInt8] = [:]
        for (byte, scalar) in byteToScalar.enumerated() { table[scalar.value] = UInt8(byte) }
        return table
    }()

    /// `text`'s UTF-8 bytes, each replaced by its printable character.
    static func map(_ text: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count * 2)
        for byte in text.utf8 { output.append(contentsOf: byteToUTF8[Int(byte)]) }
        return String(decoding: output, as: UTF8.self)
    }
}
