import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// Reads a directory with getdents64 into a caller-owned buffer and hands out each entry's
/// name as a C string with its `d_type`, so a walk over many entries allocates nothing per
/// entry and needs no `stat` to tell directories from files.
enum DirectoryEntries {
    /// `d_type` values (`DT_*`).
    enum Kind {
        static let unknown: UInt8 = 0
        static let fifo: UInt8 = 1
        static let characterDevice: UInt8 = 2
        static let directory: UInt8 = 4
        static let blockDevice: UInt8 = 6
        static let regular: UInt8 = 8
        static let symlink: UInt8 = 10
        static let socket: UInt8 = 12

        /// The `d_type` of a `st_mode`.
        static func of(mode: mode_t) -> UInt8 { UInt8((mode & 0o170000) >> 12) }
    }

    /// Calls `body` with every entry of the directory `fd` except `.` and `..`, from the
    /// descriptor's current position to the end.
    @inline(__always)
    static func forEach(in fd: Int32, buffer: UnsafeMutableRawBufferPointer,
                        _ body: (UnsafePointer<CChar>, UInt8) throws(Errno) -> Void) throws(Errno) {
        try forEachWithInode(in: fd, buffer: buffer) { (name, type, _) throws(Errno) in try body(name, type) }
    }

    /// As ``forEach(in:buffer:_:)``, with each entry's inode number (`d_ino`).
    @inline(__always)
    static func forEachWithInode(in fd: Int32, buffer: UnsafeMutableRawBufferPointer,
                                 _ body: (UnsafePointer<CChar>, UInt8, UInt64) throws(Errno) -> Void) throws(Errno) {
        while true {
            let count = snapfs_getdents64(fd, buffer.baseAddress, buffer.count)
            if count == 0 { return }
            if count < 0 {
                if errno == EINTR { continue }
                throw .current
            }
            var offset = 0
            while offset < count {
                // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
                let record = buffer.baseAddress! + offset
                offset += Int(record.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
                let type = record.load(fromByteOffset: 18, as: UInt8.self)
                let name = UnsafePointer((record + 19).assumingMemoryBound(to: CChar.self))
                if name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0)) { continue }
                try body(name, type, record.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            }
        }
    }
}
