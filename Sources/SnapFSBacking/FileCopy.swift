import CLinux
import Glibc
import SystemPackage

/// Copying a regular file's bytes and extended attributes between two open descriptors
/// (copy-up and per-database snapshots).
package enum FileCopy {
    /// Copies `size` bytes, keeping holes as holes.
    package static func copyData(from source: Int32, to target: Int32, size: Int64) throws(Errno) {
        var offset: Int64 = 0
        while offset < size {
            let dataStart = Glibc.lseek(source, off_t(offset), seekData)
            if dataStart < 0 {
                if errno == ENXIO { break }   // only a hole remains
                throw Errno.current
            }
            let holeStart = min(Int64(Glibc.lseek(source, dataStart, seekHole)), size)
            var inOffset = off_t(dataStart)
            var outOffset = off_t(dataStart)
            while Int64(inOffset) < holeStart {
                let copied = try syscallRetrying {
                    snapfs_copy_file_range(source, &inOffset, target, &outOffset, Int(holeStart - Int64(inOffset)), 0)
                }
                if copied == 0 { break }
            }
            offset = holeStart
        }
        try syscall(ftruncate(target, off_t(size)))
    }

    /// Copies the bytes in `offset ..< offset + length` to the same place in `target`, with
    /// `copy_file_range`, or by reading and writing where the filesystems or the kernel
    /// cannot (`buffer`, reused across calls, is made on first need). Stops early where
    /// the source ends (a file that shrank).
    package static func copyRange(from source: Int32, to target: Int32, offset: Int64, length: Int64,
                                  buffer: inout UnsafeMutableRawBufferPointer?) throws(Errno) {
        var input = off_t(offset)
        var output = off_t(offset)
        let end = off_t(offset + length)
        while input < end {
            let copied = snapfs_copy_file_range(source, &input, target, &output, Int(end - input), 0)
            if copied == 0 { return }
            if copied < 0 {
                switch errno {
                case EINTR: continue
                case EXDEV, EINVAL, ENOSYS, EOPNOTSUPP:
                    return try copyByReading(from: source, to: target, offset: Int64(input), end: Int64(end), buffer: &buffer)
                default: throw .current
                }
            }
        }
    }

    private static func copyByReading(from source: Int32, to target: Int32, offset: Int64, end: Int64,
                                      buffer: inout UnsafeMutableRawBufferPointer?) throws(Errno) {
        let space = buffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 4096)
        buffer = space
        var position = offset
        while position < end {
            let count = try syscallRetrying { pread(source, space.baseAddress, min(space.count, Int(end - position)), off_t(position)) }
            if count == 0 { return }
            var written = 0
            while written < count {
                written += try syscallRetrying {
                    pwrite(target, space.baseAddress! + written, count - written, off_t(position) + off_t(written))
                }
            }
            position += Int64(count)
        }
    }

    /// Copies every extended attribute the target's filesystem accepts (ACLs included).
    package static func copyExtendedAttributes(from source: Int32, to target: Int32) throws(Errno) {
        let listSize = flistxattr(source, nil, 0)
        if listSize <= 0 { return }
        var names = [CChar](repeating: 0, count: listSize)
        let length = names.withUnsafeMutableBufferPointer { flistxattr(source, $0.baseAddress, $0.count) }
        if length < 0 { throw Errno.current }
        var start = 0
        while start < length {
            let end = names[start..<length].firstIndex(of: 0) ?? length
            try names.withUnsafeBufferPointer { (buffer) throws(Errno) in
                let name = buffer.baseAddress! + start
                let valueSize = fgetxattr(source, name, nil, 0)
                guard valueSize >= 0 else { return }
                var value = [UInt8](repeating: 0, count: max(valueSize, 1))
                let got = value.withUnsafeMutableBytes { fgetxattr(source, name, $0.baseAddress, valueSize) }
                guard got >= 0 else { return }
                if value.withUnsafeBytes({ fsetxattr(target, name, $0.baseAddress, got, 0) }) != 0 && errno != ENOTSUP {
                    throw Errno.current
                }
            }
            start = end + 1
        }
    }
}
