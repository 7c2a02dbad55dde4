/// File names as text for people and for line-oriented output.
///
/// Paths are bytes: a name may hold a newline or bytes that are not UTF-8. Printed as they
/// are, a newline would forge a line of `diff` output and invalid bytes would turn into
/// U+FFFD, so that two different names print the same. `escaped` keeps every printable
/// UTF-8 character and writes everything else as an escape that names the byte: `\n`, `\t`,
/// `\r`, `\\` for a backslash, `\xHH` for any other control byte or a byte that is not part
/// of valid UTF-8. Different paths always print differently, and shells read the escapes
/// back inside `$'…'`.
public enum PathText {
    public static func escaped(_ bytes: [UInt8]) -> String {
        var text = ""
        text.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte >= 0x80, let (character, length) = utf8Character(bytes, at: index) {
                text.unicodeScalars.append(character)
                index += length
                continue
            }
            switch byte {
            case UInt8(ascii: "\\"): text += "\\\\"
            case UInt8(ascii: "\n"): text += "\\n"
            case UInt8(ascii: "\t"): text += "\\t"
            case UInt8(ascii: "\r"): text += "\\r"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + hex(byte)
            }
            index += 1
        }
        return text
    }

    /// The printable (not a control character) scalar encoded at `index`, with its length.
    private static func utf8Character(_ bytes: [UInt8], at index: Int) -> (Unicode.Scalar, Int)? {
        let lead = bytes[index]
        let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0
        guard length > 0, index + length <= bytes.count else { return nil }
        guard let decoded = String(validating: bytes[index..<index + length], as: UTF8.self),
              let scalar = decoded.unicodeScalars.first, decoded.unicodeScalars.count == 1,
              !(0x80...0x9F).contains(scalar.value), scalar.properties.generalCategory != .lineSeparator,
              scalar.properties.generalCategory != .paragraphSeparator else { return nil }
        return (scalar, length)
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }
}
