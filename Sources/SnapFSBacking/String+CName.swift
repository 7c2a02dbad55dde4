import SystemPackage

extension String {
    /// `withCString` for bodies that throw `Errno` (the standard one only rethrows `any Error`).
    package func withCName<R>(_ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        try utf8CString.withUnsafeBufferPointer { (buffer) throws(Errno) -> R in try body(buffer.baseAddress!) }
    }
}
