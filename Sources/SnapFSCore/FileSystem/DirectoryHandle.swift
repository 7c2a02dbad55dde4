import CLinux
import Glibc
import SnapFSSnapshots
import Synchronization

/// A directory opened through the mount, read with a `DIR` stream.
public final class DirectoryHandle: Sendable {
    public let inode: Inode
    /// For `.snapshots/.gmt`: its entries, read once at open (as a `DIR` stream reads a
    /// directory's entries as of its opening), listed instead of the stream's.
    let versions: [PreviousVersions.Version]?

    struct Stream: @unchecked Sendable {  // the DIR stream is only used under the mutex
        let dir: OpaquePointer
        /// The offset the stream is at, as the kernel counts offsets (`d_off` of the previous entry).
        var position: Int64
    }

    let stream: Mutex<Stream>
    /// The open counted against its user's bound (see ``HandleLedger``), given back with it.
    private let charge: HandleCharge?

    init(inode: Inode, dir: OpaquePointer, charge: HandleCharge? = nil, versions: [PreviousVersions.Version]? = nil) {
        self.inode = inode
        self.versions = versions
        self.stream = Mutex(Stream(dir: dir, position: 0))
        self.charge = charge
        inode.directoryOpened()
    }

    /// The directory's descriptor (for fsyncdir).
    public var fd: Int32 { stream.withLock { dirfd($0.dir) } }

    deinit {
        stream.withLock { _ = closedir($0.dir) }
        inode.directoryClosed()
    }
}

/// One entry of a directory listing, handed to the FUSE layer's buffer filler.
public struct DirectoryEntry {
    /// NUL-terminated name, valid only during the callback.
    public let name: UnsafePointer<CChar>
    /// The `S_IFMT` bits and inode number (for plain readdir).
    public let attributes: stat
    /// The offset at which the listing resumes after this entry.
    public let nextOffset: Int64
    /// For readdirplus: the looked-up entry (nil for "." and "..").
    public let entry: Entry?
}
