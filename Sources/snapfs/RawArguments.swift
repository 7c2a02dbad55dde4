import Glibc

/// The command line as the bytes it was given.
///
/// Swift decodes arguments into `String`, replacing bytes that are not UTF-8 with U+FFFD, so
/// a file whose name is not UTF-8 could not be named. The commands that take paths look the
/// parsed value up among the raw arguments and use its bytes.
enum RawArguments {
    /// The bytes of the `occurrence`-th (from 0) argument that decodes to `value`; `value`'s
    /// own UTF-8 if there is none (an argument ArgumentParser made up, such as a default).
    static func bytes(of value: String, occurrence: Int = 0) -> [UInt8] {
        var seen = 0
        for index in 1..<Int(CommandLine.argc) {
            guard let pointer = CommandLine.unsafeArgv[index] else { continue }
            let raw = Array(UnsafeBufferPointer(start: UnsafeRawPointer(pointer).assumingMemoryBound(to: UInt8.self), count: strlen(pointer)))
            guard String(decoding: raw, as: UTF8.self) == value else { continue }
            if seen == occurrence { return raw }
            seen += 1
        }
        return Array(value.utf8)
    }

    /// The raw bytes of each of `values`, in order (repeated values take later arguments).
    static func bytes(of values: [String]) -> [[UInt8]] {
        var counts: [String: Int] = [:]
        return values.map { value in
            let occurrence = counts[value, default: 0]
            counts[value] = occurrence + 1
            return bytes(of: value, occurrence: occurrence)
        }
    }
}
