import CLinux
import Glibc

/// Identity of an object in the backing filesystem.
public struct BackingKey: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    public init(_ st: stat) {
        self.init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }
}

/// A backing object the kernel knows by `id`, its FUSE node id.
///
/// snapfs numbers node ids itself instead of passing the backing inode number through, so
/// that the id the kernel holds can outlive a change of backing object (copy-up after a
/// hard-link snapshot) and ids of the live tree and of `.snapshots/` never collide.
/// `st_ino` as applications see it stays the backing inode number.
public final class Inode: Sendable {
    public let id: UInt64
    /// `SNAPFS_O_PATH` descriptor of the backing object; every access goes through it.
    public let fd: Int32
    public let key: BackingKey
    /// The `S_IFMT` bits; an object's type never changes.
    public let fileType: mode_t

    init(id: UInt64, fd: Int32, key: BackingKey, fileType: mode_t) {
        self.id = id
        self.fd = fd
        self.key = key
        self.fileType = fileType
    }

    deinit { close(fd) }

    public var isDirectory: Bool { fileType == S_IFDIR }
    public var isSymlink: Bool { fileType == S_IFLNK }
}
