import CLinux
import Glibc
import SystemPackage

/// Calls that return -1 and set `errno` become throwing calls.
@inline(__always)
@discardableResult
func syscall<T: SignedInteger>(_ result: T) throws(Errno) -> T {
    if result < 0 { throw Errno(rawValue: errno) }
    return result
}

/// Retries a call interrupted by a signal.
@inline(__always)
@discardableResult
func syscallRetrying<T: SignedInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result >= 0 { return result }
        if errno != EINTR { throw Errno(rawValue: errno) }
    }
}

extension Errno {
    /// The errno of the last failed call.
    static var current: Errno { Errno(rawValue: errno) }
}
