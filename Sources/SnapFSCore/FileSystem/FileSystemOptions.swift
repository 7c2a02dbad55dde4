import CLinux
import SnapFSCache
import SnapFSSQLite
/// Behaviour of a mounted ``SnapFileSystem`` that the user can choose.
public struct FileSystemOptions: Sendable {
    /// Refuse every change with EROFS.
    public var readOnly = false
    /// The kernel batches small writes in its own page cache (FUSE write-back caching).
    /// Off here; on for `snapfs mount` unless `-o no_writeback_cache` (``MountOptions``).
    public var kernelWritebackCache = false
    /// The kernel reads files opened read-only straight from the backing file (FUSE
    /// passthrough), when the FUSE layer attaches it. On for `snapfs mount` with
    /// `-o no_writeback_cache`, unless `-o nopassthrough` (the kernel allows it only
    /// without its write-back cache).
    public var kernelPassthrough = false
    /// The kernel enforces POSIX ACLs (and leaves the umask to snapfs). Off with -o noacl.
    public var posixACL = true
    /// Give new files the caller's owner (as a local filesystem does) when the daemon runs as root.
    public var ownFilesAsCaller = true

    /// snapfs's own page cache; off here (every write reaches the backing file at once),
    /// on by default for `snapfs mount` (``MountOptions``).
    public var cache = CachePolicy.off

    /// The most files and directories one user may hold open (nil: ``HandleLedger/Limits/defaults(descriptorLimit:)``).
    public var handleLimits: HandleLedger.Limits?

    public init() {}
    /// SQLite commit detection and the snapshots it triggers.
    public var sqlite = SQLiteOptions()
}
