extension Array where Element == UInt8 {
    /// Calls `body` with these bytes as a NUL-terminated C string (file names need not be
    /// UTF-8, so they are kept as bytes rather than `String`).
    package func withCString<R, E: Error>(_ body: (UnsafePointer<CChar>) throws(E) -> R) throws(E) -> R {
        var terminated = self
        terminated.append(0)
        return try terminated.withUnsafeBufferPointer { (buffer) throws(E) -> R in
            try body(UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self))
        }
    }
}
