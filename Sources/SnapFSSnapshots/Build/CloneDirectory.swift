import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// One directory of a clone in progress: descriptors of the source directory and of its new
/// copy, the source's metadata, and the counts that decide when each descriptor is closed
/// and when the metadata is applied.
///
/// A directory's times, mode, owner and ACLs are applied only once everything inside it has
/// been made: creating entries would change its mtime, a restrictive mode could lock the
/// cloner out, and a default ACL or setgid bit would be inherited by the new entries.
final class CloneDirectory: @unchecked Sendable {
    // Written only by the thread that opens the directory, before any child exists; read by
    // children (after the push that publishes them) and by whoever completes the subtree
    // (after the acquire-release decrement of `pending`).
    let parent: CloneDirectory?
    /// The name in the parent, NUL-terminated; just the NUL for the top directory.
    let name: [CChar]
    var source: Int32 = -1
    var target: Int32 = -1
    var status = stat()
    var attributes: [(name: [CChar], value: [UInt8])] = []
    /// Rollback journals copied into this directory (see ``HotJournal``); same thread.
    var journals: [[CChar]] = []
    /// Entries that may be SQLite databases, confirmed and finished when the directory is
    /// complete (see ``SQLiteCompanion/complete(_:sealLater:)``); same thread.
    var databases: [[CChar]] = []
    /// A background build placed a file here that is copied by chunks (``RangedCopy``).
    var holdsChunkedCopy = false
    /// Its path relative to the root (empty: the top), while exclude patterns with `/` can
    /// still match its entries; nil otherwise (see ``SnapshotExclusions/childPath(_:of:)``).
    var path: [UInt8]?

    /// Holders of `source`: the directory's own listing, and each child not yet opened
    /// (a child opens itself relative to its parent's descriptors).
    private let sourceHolders = Atomic<Int>(1)
    /// Unfinished parts of the subtree: the listing and each child's subtree.
    private let pending = Atomic<Int>(1)

    /// Levels below the top of the clone.
    let depth: Int
    /// Whether files below may stand as the first name of a hard link for later names
    /// (``CloneWorker/openTarget(of:from:)`` reaches it through its open ancestors). Not for
    /// the directories of a deep walk, whose descriptors close as the walk moves on.
    let isLinkOrigin: Bool

    /// Directories below this depth are cloned by one thread with a cursor (see
    /// ``CloneWorker/cloneDeep(_:in:)``), so that a deep tree costs no descriptor per level.
    static let deepWalkDepth = 64

    init(parent: CloneDirectory?, name: UnsafePointer<CChar>, isLinkOrigin: Bool = true) {
        self.parent = parent
        self.name = Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
        self.depth = parent.map { $0.depth + 1 } ?? 0
        self.isLinkOrigin = isLinkOrigin
    }

    /// Opens the source directory and its copy (already made by the parent's listing) and
    /// reads the source's metadata.
    func open(noAccessTime: Int32, attributeBuffers: ExtendedAttributes) throws(Errno) {
        guard let parent else { return }
        try name.withUnsafeBufferPointer { (name) throws(Errno) in
            let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
            source = try syscall(snapfs_openat(parent.source, name.baseAddress!, flags | noAccessTime, 0))
            target = try syscall(snapfs_openat(parent.target, name.baseAddress!, flags, 0))
        }
        try syscall(fstat(source, &status))
        attributes = try attributeBuffers.read(.descriptor(source))
    }

    /// A child was found: it holds this directory's descriptors until it has opened its own,
    /// and this directory's metadata waits for the child's subtree.
    func adopt() {
        sourceHolders.wrappingAdd(1, ordering: .relaxed)
        pending.wrappingAdd(1, ordering: .relaxed)
    }

    /// The listing, or a child that has opened itself, no longer needs `source`.
    func releaseSource() {
        if sourceHolders.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            if source >= 0 { close(source) }
            source = -1
        }
    }

    /// The listing, or a child's subtree, is done. The last part to finish applies the
    /// metadata (unless the run failed), closes `target`, and finishes the parent's part.
    func finishPart(of run: CloneRun) {
        var directory: CloneDirectory? = self
        while let current = directory,
              current.pending.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            if !run.failed && current.target >= 0 {
                do throws(Errno) { try current.applyMetadata() } catch { run.fail(error) }
            }
            current.closeDescriptors()
            directory = current.parent
        }
    }

    /// Owner, then xattrs, then mode (chown clears setuid/setgid; an ACL rewrites the group
    /// bits), then times.
    func applyMetadata() throws(Errno) {
        try syscall(fchown(target, status.st_uid, status.st_gid))
        try ExtendedAttributes.write(attributes, to: .descriptor(target))
        try syscall(fchmod(target, status.st_mode & 0o7777))
        var times = (status.st_atim, status.st_mtim)
        _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
            try syscall(futimens(target, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
        }
        // The top is sealed once it has its name (an immutable directory cannot be renamed).
        if parent != nil || !isLinkOrigin { try Seal.apply(target) }
    }

    func closeDescriptors() {
        if source >= 0 { close(source) }
        if target >= 0 { close(target) }
        source = -1
        target = -1
    }
}
