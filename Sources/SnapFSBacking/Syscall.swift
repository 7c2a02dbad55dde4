import CLinux
import Glibc
import SystemPackage

/// Calls that return -1 and set `errno` become throwing calls.
@inlinable @inline(__always)
@discardableResult
package func syscall<T: SignedInteger>(_ result: T) throws(Errno) -> T {
    if result < 0 { throw Errno(rawValue: errno) }
    return result
}

/// Retries a call interrupted by a signal.
@inline(__always)
@discardableResult
package func syscallRetrying<T: SignedInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result >= 0 { return result }
        if errno != EINTR { throw Errno(rawValue: errno) }
    }
}

/// Everything `fd` yields until end of file or an error other than EINTR (for example
/// EAGAIN on a non-blocking pipe that is empty).
public func readToEnd(_ fd: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return bytes }
        bytes += buffer[0..<n]
    }
}

/// The whole content of the file at `path`, or nil if it cannot be opened.
public func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readToEnd(fd)
}

/// Replaces the file `name` in the directory `dir` with `bytes`, durably and atomically:
/// written to `temporary` and synced, renamed over `name`, then the directory synced (small
/// records of the daemon's own, in a directory only it writes).
package func replaceDurably(_ name: String, in dir: Int32, with bytes: [UInt8], temporary: String) throws(Errno) {
    let fd = try syscall(snapfs_openat(dir, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644))
    do throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            offset += try syscallRetrying { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) } }
        }
        try syscallRetrying { fsync(fd) }
    } catch {
        close(fd)
        throw error
    }
    close(fd)
    try syscall(renameat(dir, temporary, dir, name))
    try syscallRetrying { fsync(dir) }
}

extension Errno {
    /// The errno of the last failed call.
    @inlinable package static var current: Errno { Errno(rawValue: errno) }
}

/// lseek(2) whence values Glibc's Swift overlay does not export (_GNU_SOURCE).
let seekData: Int32 = 3
let seekHole: Int32 = 4

/// `path` made absolute against the working directory (unchanged if it already is).
package func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    guard let cwd = getcwd(nil, 0) else { return path }
    defer { free(cwd) }
    return String(cString: cwd) + "/" + path
}
