import CLinux
import Glibc
import SystemPackage

/// The resources a write spends are the caller's: blocks count against the file owner's
/// disk quota and stop at ext4's reserve for root, as they would if the caller wrote
/// natively, although the daemon writes as root.
///
/// Two things let root past those limits: CAP_SYS_RESOURCE (quotas and the reserve) and
/// filesystem uid 0 (ext4 gives its reserved blocks to `resuid`, root by default). So the
/// daemon serves each request with CAP_SYS_RESOURCE only if the caller is root (a
/// per-thread switch that costs a system call only when the kind of caller changes), and
/// the calls that allocate data blocks for someone else run under that user's filesystem
/// uid, with every other capability of the daemon kept (so nothing else it does changes).
/// Background threads (cache flusher, timers) never hold CAP_SYS_RESOURCE, and cached data
/// written back later is charged as its file's owner.
public enum CallerIdentity {
    /// At start, before any thread: takes CAP_SYS_RESOURCE out of the daemon's effective
    /// set (threads made later inherit that). Call after raising the resource limits.
    /// Returns whether the process can act as its callers (it runs as root).
    @discardableResult
    public static func start() -> Bool {
        snapfs_identity_init() == 1
    }

    /// Before serving a request of `uid`: CAP_SYS_RESOURCE is the caller's only if it is root.
    @inline(__always)
    public static func serve(uid: uid_t) {
        _ = snapfs_resource_capability(uid == 0 ? 1 : 0)
    }

    /// At the start of a background thread, which acts for no one.
    static func background() {
        _ = snapfs_resource_capability(0)
    }

    /// Runs `body`, a call that allocates blocks, as `uid` would (see the type's comment).
    @inline(__always)
    package static func allocating<R>(as uid: uid_t, _ body: () throws(Errno) -> R) throws(Errno) -> R {
        let begun = snapfs_allocation_begin(uid, -1)
        defer { snapfs_allocation_end(begun) }
        return try body()
    }

    /// Runs `body`, a write to `fd` of data cached earlier, as the file's owner would
    /// (unless already inside ``allocating(as:_:)``, for the request's caller).
    @inline(__always)
    package static func allocating<R>(asOwnerOf fd: Int32, _ body: () throws(Errno) -> R) throws(Errno) -> R {
        let begun = snapfs_allocation_begin(0, fd)
        defer { snapfs_allocation_end(begun) }
        return try body()
    }
}
