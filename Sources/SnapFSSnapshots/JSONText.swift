import FoundationEssentials

/// The JSON snapfs writes, in metadata files and on `--json`: pretty-printed, keys sorted,
/// slashes unescaped, ending in a newline.
public enum JSONText {
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // What snapfs encodes is strings, numbers, booleans and arrays or objects of them:
        // encoding cannot fail.
        let data = try! encoder.encode(value)
        return Array(data) + [UInt8(ascii: "\n")]
    }
}
