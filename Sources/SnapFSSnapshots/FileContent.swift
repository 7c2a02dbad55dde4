import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// Byte-wise comparison of regular files.
public enum FileContent {
    /// Whether the files open at `a` and `b` have the same bytes, read from offset 0 with
    /// `pread` (the descriptors' offsets are not moved). Stops at the first difference.
    public static func equal(_ a: Int32, _ b: Int32) throws(Errno) -> Bool {
        let chunk = 1 << 20
        var left = [UInt8](repeating: 0, count: chunk)
        var right = [UInt8](repeating: 0, count: chunk)
        var offset: off_t = 0
        while true {
            let n = try readFully(a, &left, at: offset)
            let m = try readFully(b, &right, at: offset)
            if n != m { return false }
            if n == 0 { return true }
            let same = left.withUnsafeBytes { l in right.withUnsafeBytes { r in memcmp(l.baseAddress!, r.baseAddress!, n) == 0 } }
            if !same { return false }
            offset += off_t(n)
        }
    }

    /// Whether the regular files `nameA` in `dirA` and `nameB` in `dirB` have the same bytes.
    public static func equal(in dirA: Int32, _ nameA: [UInt8], and dirB: Int32, _ nameB: [UInt8]) throws(Errno) -> Bool {
        let a = try openRegular(dirA, nameA)
        defer { close(a) }
        let b = try openRegular(dirB, nameB)
        defer { close(b) }
        return try equal(a, b)
    }

    /// Opens the regular file `name` in `dirFD` for reading, refusing to follow a symlink or
    /// to block on a FIFO put in its place (EINVAL if it is not a regular file).
    public static func openRegular(_ dirFD: Int32, _ name: [UInt8]) throws(Errno) -> Int32 {
        let fd = name.withCString { snapfs_openat(dirFD, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0) }
        if fd < 0 { throw Errno.current }
        var status = stat()
        if fstat(fd, &status) != 0 || status.st_mode & S_IFMT != S_IFREG {
            close(fd)
            throw Errno.invalidArgument
        }
        return fd
    }

    /// Reads until `buffer` is full or the file ends; returns the byte count.
    static func readFully(_ fd: Int32, _ buffer: inout [UInt8], at offset: off_t) throws(Errno) -> Int {
        var total = 0
        while total < buffer.count {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + total, $0.count - total, offset + off_t(total)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Errno.current
            }
            if n == 0 { break }
            total += n
        }
        return total
    }
}
