import CLinux
import Glibc

/// A name resolved to an inode, with the attributes to hand to the kernel.
/// Each `Entry` returned by the core carries one kernel reference on `inode`.
public struct Entry: Sendable {
    public let inode: UInt64
    public var attributes: stat
    /// The kernel must not cache this name: snapfs changes it behind the kernel's back
    /// (`.snapshots/`, where snapshots appear, vanish and get new metadata; the control file).
    public var uncached: Bool

    public init(inode: UInt64, attributes: stat, uncached: Bool = false) {
        self.inode = inode
        self.attributes = attributes
        self.uncached = uncached
    }
}

/// A change of file times requested through setattr.
public enum TimeChange: Sendable, Equatable {
    case now
    case set(timespec)

    public static func == (lhs: TimeChange, rhs: TimeChange) -> Bool {
        switch (lhs, rhs) {
        case (.now, .now): return true
        case let (.set(a), .set(b)): return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec
        default: return false
        }
    }
}

/// The attribute changes of one setattr request; nil fields stay as they are.
public struct AttributeChanges: Sendable {
    public var mode: mode_t?
    public var uid: uid_t?
    public var gid: gid_t?
    public var size: Int64?
    public var accessTime: TimeChange?
    public var modificationTime: TimeChange?

    public init(mode: mode_t? = nil, uid: uid_t? = nil, gid: gid_t? = nil, size: Int64? = nil,
                accessTime: TimeChange? = nil, modificationTime: TimeChange? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.accessTime = accessTime
        self.modificationTime = modificationTime
    }
}

/// Where the bytes of a read come from: a range of a backing file (which the FUSE layer
/// can splice to the kernel without copying) or memory.
public enum ReadData: Sendable {
    case file(fd: Int32, offset: Int64, length: Int)
    case bytes([UInt8])
}
