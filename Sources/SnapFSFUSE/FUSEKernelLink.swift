import CFUSE
import CLinux
import Glibc
import SnapFSBacking
import SnapFSCore

/// What the snapshot engine asks of the kernel, through the mounted session.
final class FUSEKernelLink: KernelLink, @unchecked Sendable {
    private let session: OpaquePointer
    private let mountpoint: String

    init(session: OpaquePointer, mountpoint: String) {
        self.session = session
        self.mountpoint = mountpoint
    }

    /// Invalidates the page cache of each inode: the kernel first writes its dirty pages
    /// back to the daemon (served by other worker threads) and waits for each write, which
    /// `syncfs` on a FUSE mount does not (Linux 6.18 starts the write-back and returns).
    /// Clean pages go too; the next reads fetch them again.
    func pushDirtyPages(of inodes: [UInt64]) {
        for inode in inodes {
            _ = fuse_lowlevel_notify_inval_inode(session, inode, 0, 0)
        }
    }

    func invalidateAttributes(of inode: UInt64) {
        // A negative offset: the attributes only, not the page cache.
        _ = fuse_lowlevel_notify_inval_inode(session, inode, -1, 0)
    }

    func invalidateEntry(parent: UInt64, name: String) {
        _ = name.withCString { fuse_lowlevel_notify_inval_entry(session, parent, $0, strlen($0)) }
    }
}
