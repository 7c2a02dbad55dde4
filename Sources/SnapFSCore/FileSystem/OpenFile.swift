import CLinux
import Glibc

/// A file opened through the mount: the backing descriptor and the inode it belongs to.
/// The FUSE layer keeps it alive from open/create to release.
public final class OpenFile: Sendable {
    public let inode: Inode
    /// Read/write descriptor of the backing file.
    public let fd: Int32
    public let flags: Int32
    /// Its writes go to the backing file, not into the page cache (unless the file has
    /// dirty data there already), and its close does not reach the daemon: a file just
    /// created through the mount (see `SnapFileSystem.writesThroughWhenCreated`).
    public let writesThrough: Bool

    init(inode: Inode, fd: Int32, flags: Int32, writesThrough: Bool = false) {
        self.inode = inode
        self.fd = fd
        self.flags = flags
        self.writesThrough = writesThrough
        inode.opened(fd: fd, flags: flags)
    }

    deinit { inode.closeOpenFile(fd: fd) }
}
