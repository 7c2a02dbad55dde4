import Glibc
import SystemPackage

/// FUSE passthrough as the FUSE layer provides it: the kernel reads and maps a registered
/// backing file itself, without a request to the daemon (Linux ≥ 6.9, the daemon needs
/// CAP_SYS_ADMIN).
public protocol KernelPassthrough: AnyObject, Sendable {
    /// Registers `fd` (the backing file, open for reading) with the kernel; its id, or nil
    /// if the kernel refuses it.
    func register(_ fd: Int32) -> Int32?
    /// Forgets a registration; files the kernel opened with it keep their backing file.
    func unregister(_ id: Int32)
}

/// How the kernel serves an open file.
public enum PassthroughMode: Sendable, Equatable {
    /// Through the daemon, as usual.
    case none
    /// The kernel reads (and maps) backing file `id` directly.
    case reads(id: Int32)
    /// The inode is in passthrough mode, so the open must name backing file `id` too, but
    /// its reads and writes come to the daemon (direct I/O): an open that may write, or a
    /// file the daemon must see (a SQLite file), while another open reads directly.
    case directIO(id: Int32)

    public var backingID: Int32? {
        switch self {
        case .none: return nil
        case let .reads(id), let .directIO(id): return id
        }
    }
}

/// Passthrough in the core.
///
/// A read-only open of a regular file gets `reads` when the mount has passthrough (a
/// ``KernelPassthrough`` is attached), nothing else is open on the inode, and the backing
/// object is the file's own (with hard-link snapshots: not shared with a snapshot). Before
/// it starts, the page cache writes the file's dirty data back and forgets its pages: from
/// then on the backing file is the truth. While it lasts:
/// - every other open of the inode joins as `directIO`, and its writes skip the page cache
///   (they must be in the backing file when they return, where the readers look);
/// - a hard-link snapshot copies the object instead of linking it
///   (``SnapshotState/passthroughObjects``), so a change never needs a copy-up (the
///   kernel's open files would stay on the old object). So that this stays cheap, with
///   hard-link snapshots only files up to ``passthroughCopyLimit`` pass through.
/// It ends when the last of those files is released; if one could write (and so map the
/// backing file shared, past the daemon), the page cache forgets the file's pages again.
extension SnapFileSystem {
    /// Attached by the FUSE layer once the mount is up (before any request is served).
    public func attachPassthrough(_ kernel: any KernelPassthrough) {
        passthroughKernel.attach(kernel)
    }

    /// With hard-link snapshots, the largest file that passes through (a snapshot taken
    /// meanwhile copies it: about 0.1 s at this size on an ordinary disk).
    static let passthroughCopyLimit: Int64 = 64 << 20

    /// What `OpenFile` offers the inode for a read-only open of `fd`: nil when the open may
    /// not read directly. Called inside the gate (so no snapshot is being built meanwhile).
    func passthroughOffer(for node: Inode, fd: Int32, flags: Int32) -> (() -> Int32?)? {
        guard options.kernelPassthrough, let kernel = passthroughKernel.value,
              flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0, node.isRegularFile,
              node.sqlite.role.load(ordering: .relaxed) == 0 else { return nil }
        if node.inPassthroughMode { return { nil } }
        return passthroughStart(node, fd: fd, kernel: kernel)
    }

    /// What `OpenFile` offers a SQLite journal just created (`fd` open for writing) that
    /// the kernel may write directly (see `SnapFileSystem+JournalPassthrough`).
    func passthroughOffer(forJournal node: Inode, fd: Int32) -> (() -> Int32?)? {
        guard options.kernelPassthrough, let kernel = passthroughKernel.value, node.isRegularFile,
              !node.inSnapshotView, !node.inPassthroughMode else { return nil }
        return passthroughStart(node, fd: fd, kernel: kernel)
    }

    /// The offer that starts passthrough mode on `node` with `fd`, if it may start.
    private func passthroughStart(_ node: Inode, fd: Int32, kernel: any KernelPassthrough) -> (() -> Int32?)? {
        guard node.hasNoOpenFile, node.inSnapshotView || ownsBackingObject(node) else { return nil }
        // A hard-link build in progress would link the object once the kernel holds it open.
        if snapshotState.sharesBackingObjects && !node.inSnapshotView && snapshotState.activeCapture != nil { return nil }
        if snapshotState.sharesBackingObjects && !node.inSnapshotView {
            // Every hard-link snapshot taken while it lasts copies the file: only small ones.
            var st = stat()
            guard fstat(fd, &st) == 0, Int64(st.st_size) <= Self.passthroughCopyLimit else { return nil }
        }
        // The backing file becomes the truth for the kernel's reads.
        do throws(Errno) {
            let cache = try writeBackBeforeDirectChange(node)
            try forgetCachedPages(of: node, in: cache)
        } catch {
            return nil
        }
        let state = snapshotState
        // The inode's own key: the one `passthroughEnded` removes (no copy-up can change it
        // while the gate is passed and the inode owns its object).
        let key = node.inSnapshotView ? nil : node.key
        return {
            guard let id = kernel.register(fd) else { return nil }
            if let key { state.passthroughObjects.withLock { _ = $0.insert(key) } }
            return id
        }
    }

    /// The last open file of a passthrough inode is gone.
    func passthroughEnded(_ node: Inode, _ ended: Inode.PassthroughState) {
        passthroughKernel.value?.unregister(ended.id)
        if !node.inSnapshotView {
            snapshotState.passthroughObjects.withLock { _ = $0.remove(ended.key) }
        }
        if ended.writerJoined, let cache = cacheHolding(node) {
            try? forgetCachedPages(of: node, in: cache)
        }
    }
}
