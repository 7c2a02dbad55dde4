import CLinux
import Glibc
import SystemPackage

/// Reaches the object behind an `SNAPFS_O_PATH` descriptor through `/proc/self/fd`, the only
/// way Linux offers to reopen it, or to chmod/truncate/xattr it, without a path string
/// from the backing tree (so a symlink swapped into the tree cannot redirect the call).
public struct ProcSelfFD: Sendable {
    /// `SNAPFS_O_PATH` descriptor of `/proc/self/fd`, opened once at start-up.
    public let directory: Int32

    public init() throws(Errno) {
        directory = try syscall(snapfs_openat(AT_FDCWD, "/proc/self/fd", SNAPFS_O_PATH | O_DIRECTORY | O_CLOEXEC, 0))
    }

    /// Calls `body` with the descriptor's name inside `/proc/self/fd` ("17").
    @inline(__always) @discardableResult
    public func withName<R>(of fd: Int32, _ body: (UnsafePointer<CChar>) throws(Errno) -> R) throws(Errno) -> R {
        // Decimal digits of a non-negative Int32 fit in 11 bytes plus the terminator.
        var buffer: (UInt64, UInt64) = (0, 0)
        return try withUnsafeMutableBytes(of: &buffer) { raw throws(Errno) -> R in
            let bytes = raw.bindMemory(to: CChar.self)
            var value = fd
            var digits = 0
            repeat { digits += 1; value /= 10 } while value > 0
            value = fd
            for index in stride(from: digits - 1, through: 0, by: -1) {
                bytes[index] = CChar(48 + value % 10)
                value /= 10
            }
            bytes[digits] = 0
            return try body(bytes.baseAddress!)
        }
    }

    /// The absolute path `/proc/self/fd/N`, for calls that have no `*at` form (the xattr family).
    public func path(of fd: Int32) -> String { "/proc/self/fd/\(fd)" }

    /// Opens the file behind an `SNAPFS_O_PATH` descriptor for I/O.
    public func reopen(_ fd: Int32, flags: Int32) throws(Errno) -> Int32 {
        try withName(of: fd) { name throws(Errno) in
            try syscallRetrying { snapfs_openat(directory, name, (flags | O_CLOEXEC) & ~(O_NOFOLLOW | O_CREAT | O_EXCL), 0) }
        }
    }

    /// Gives the object behind `fd` (`SNAPFS_O_PATH` will do) the new name `name` in `dir`:
    /// `linkat` with `SNAPFS_AT_EMPTY_PATH`, which needs CAP_DAC_READ_SEARCH, or else
    /// through `/proc/self/fd`.
    public func link(_ fd: Int32, into dir: Int32, as name: UnsafePointer<CChar>) throws(Errno) {
        guard linkat(fd, "", dir, name, SNAPFS_AT_EMPTY_PATH) != 0 else { return }
        guard errno == ENOENT else { throw Errno.current }
        try withName(of: fd) { procName throws(Errno) in
            _ = try syscall(linkat(directory, procName, dir, name, AT_SYMLINK_FOLLOW))
        }
    }

    /// Where the descriptor points (`readlink /proc/self/fd/N`): the object's current path.
    public func target(of fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = (try? withName(of: fd) { name in readlinkat(directory, name, &buffer, buffer.count - 1) }) ?? -1
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
