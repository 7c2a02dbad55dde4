import CLinux
import Glibc

/// A file opened through the mount: the backing descriptor and the inode it belongs to.
/// The FUSE layer keeps it alive from open/create to release.
public final class OpenFile: Sendable {
    public let inode: Inode
    /// Read/write descriptor of the backing file.
    public let fd: Int32
    public let flags: Int32

    init(inode: Inode, fd: Int32, flags: Int32) {
        self.inode = inode
        self.fd = fd
        self.flags = flags
        inode.opened(fd: fd, flags: flags)
    }

    deinit { inode.closeOpenFile(fd: fd) }
}
