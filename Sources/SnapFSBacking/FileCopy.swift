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
