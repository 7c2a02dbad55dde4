import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// The four xattr operations, reached through `/proc/self/fd` (the xattr calls take no
/// `SNAPFS_O_PATH` descriptor).
extension SnapFileSystem {
    /// Writes the value into `buffer` when it is large enough; returns the value's size.
    /// With an empty buffer, only the size is returned.
    public func getxattr(_ inode: UInt64, name: UnsafePointer<CChar>,
                         into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let node = try inodes.inode(inode)
        if node.isSymlink { throw Errno.noData }
        return try node.withFD { (fd) throws(Errno) in
            try syscall(CLinux.getxattr(proc.path(of: fd), name, buffer.baseAddress, buffer.count))
        }
    }

    public func listxattr(_ inode: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let node = try inodes.inode(inode)
        if node.isSymlink { return 0 }
        return try node.withFD { (fd) throws(Errno) in
            try syscall(CLinux.listxattr(proc.path(of: fd), buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count))
        }
    }

    public func setxattr(_ inode: UInt64, name: UnsafePointer<CChar>, value: UnsafeRawBufferPointer,
                         flags: Int32) throws(Errno) {
        let node = try inodes.inode(inode)
        if node.isSymlink { throw Errno.notPermitted }
        try mutate(.extendedAttributes(inode: node)) { () throws(Errno) in
            try node.withFD { (fd) throws(Errno) in
                _ = try syscall(CLinux.setxattr(proc.path(of: fd), name, value.baseAddress, value.count, flags))
            }
        }
    }

    public func removexattr(_ inode: UInt64, name: UnsafePointer<CChar>) throws(Errno) {
        let node = try inodes.inode(inode)
        if node.isSymlink { throw Errno.notPermitted }
        try mutate(.extendedAttributes(inode: node)) { () throws(Errno) in
            try node.withFD { (fd) throws(Errno) in _ = try syscall(CLinux.removexattr(proc.path(of: fd), name)) }
        }
    }
}
