import CLinux
import Glibc
import SnapFSBacking
import SnapFSCache
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// A backing object the kernel knows by `id`, its FUSE node id.
///
/// snapfs numbers node ids itself instead of passing the backing inode number through, so
/// that the id the kernel holds can outlive a change of backing object (copy-up after a
/// hard-link snapshot) and ids of the live tree and of `.snapshots/` never collide.
/// `st_ino` as applications see it stays the backing inode number.
///
/// Every access to the backing object goes through its `SNAPFS_O_PATH` descriptor, lent
/// out by ``withFD(_:)``. The kernel can hold more inodes than the process may have
/// descriptors; when a ``DescriptorPool`` runs over its budget it closes the descriptors
/// of inodes nobody used lately, and ``withFD(_:)`` reopens them by file handle.
public final class Inode: Sendable {
    public let id: UInt64
    /// The `S_IFMT` bits; an object's type never changes.
    public let fileType: mode_t
    /// The inode belongs to `.snapshots/`, where nothing may change.
    public let inSnapshotView: Bool
    /// The inode belongs to `.snapshots/.gmt/`, the view of the tree snapshots by second
    /// for SMB's previous versions (see ``PreviousVersions``); also ``inSnapshotView``.
    public let inPreviousVersions: Bool
    /// What each feature keeps per inode, defined where the feature lives: copy-up
    /// (`SnapFileSystem+CopyUp`), commit detection (`SQLite/SQLiteNodeState`), the page
    /// cache and the kernel's times (`SnapFileSystem+Cache`).
    let copyUp: CopyUpNodeState
    let sqlite = SQLiteNodeState()
    let cache = CacheNodeState()
    private let pool: DescriptorPool?
    private let slot: Mutex<Slot>

    private struct Slot {
        var fd: Int32
        /// Identity of the backing object; changes only by a copy-up.
        var key: BackingKey
        /// Set while the kernel reads the backing file directly (see ``opened(fd:flags:offer:)``).
        var passthrough: PassthroughState?
        /// The name through which the kernel last reached the inode (for a copy-up, which must
        /// replace it); kept only for regular files when snapshots share inodes.
        var name: (parent: Inode, name: [CChar])?
        /// Read/write descriptors of the files open on this inode, with their open flags,
        /// so that a copy-up can move them to the new backing object.
        var openFiles: [Int32: Int32] = [:]
        /// Whether the open files bypass the kernel's page cache (direct I/O), chosen by
        /// the first of them and kept until the last is closed: the kernel keeps a direct
        /// open coherent with a cached one of the same inode only in part.
        var kernelDirect = false
        /// Files were open with direct I/O since a cached open last dropped the kernel's
        /// pages: those pages may be stale, so the next cached open drops them again.
        var kernelPagesStale = false
        /// Borrowers in ``withFD(_:)`` right now; the descriptor is not closed while > 0.
        var pins = 0
        /// While `fd` is closed and a file is open on the inode, borrowers get that file's
        /// descriptor instead (any descriptor of the object serves `withFD`'s callers): so a
        /// file held open costs one descriptor, not two, once the pool closes its
        /// `SNAPFS_O_PATH` one. -1 when none is lent.
        var lent: Int32 = -1
        /// The lent file was released while borrowed: its descriptor closes with the last unpin.
        var closeLentAtUnpin = false
        /// Used since the last sweep of the pool.
        var referenced = true
        /// The backing object's file handle, taken when the descriptor is first closed.
        var handle: [UInt8]?
        /// The backing filesystem gave no handle: the descriptor must stay open.
        var pinnedForever = false
    }

    /// Takes ownership of `fd`. With no `pool`, the descriptor stays open for the inode's life.
    init(id: UInt64, fd: Int32, key: BackingKey, fileType: mode_t, pool: DescriptorPool? = nil,
         inSnapshotView: Bool = false, inPreviousVersions: Bool = false, privateGeneration: UInt64 = 0) {
        self.id = id
        self.fileType = fileType
        self.pool = pool
        self.inSnapshotView = inSnapshotView || inPreviousVersions
        self.inPreviousVersions = inPreviousVersions
        self.copyUp = CopyUpNodeState(privateGeneration: privateGeneration)
        self.slot = Mutex(Slot(fd: fd, key: key))
    }

    /// Identity of the backing object.
    public var key: BackingKey { slot.withLock { $0.key } }

    deinit {
        slot.withLock { slot in
            if slot.fd >= 0 {
                close(slot.fd)
                pool?.closed()
            }
        }
    }

    /// Puts the inode number applications know into `st`: the number the file had before
    /// a copy-up (see ``CopyUpNodeState/reportedInode``); under `.snapshots/`, the backing number with the
    /// top bit set, so that a snapshot's file never passes for the live file it was
    /// hard-linked from (or whose number the live file kept), as `cp` and `diff` would take it.
    /// Under `.snapshots/.gmt/` the next bit is set too: there the same objects show a second
    /// time, and `.gmt` is the store itself, which `find` would take for a loop.
    @inline(__always)
    func applyReportedInode(_ st: inout stat) {
        if inSnapshotView {
            st.st_ino |= UInt(1) << 63
            if inPreviousVersions { st.st_ino |= UInt(1) << 62 }
            return
        }
        let reported = copyUp.reportedInode.load(ordering: .relaxed)
        if reported != 0 { st.st_ino = UInt(reported) }
    }

    public var isDirectory: Bool { fileType == S_IFDIR }
    public var isRegularFile: Bool { fileType == S_IFREG }
    public var isSymlink: Bool { fileType == S_IFLNK }

    /// Runs `body` with the inode's `SNAPFS_O_PATH` descriptor, which stays open until
    /// `body` returns (reopened first if it was closed to save descriptors).
    @inline(__always)
    public func withFD<R>(_ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        let (fd, overBudget) = try pin()
        defer { unpin() }
        // This inode is pinned, so the sweep leaves its descriptor alone.
        if overBudget, let pool { pool.sweep() }
        return try body(fd)
    }

    /// The descriptor, reopened if needed; and whether reopening put the pool over budget.
    private func pin() throws(Errno) -> (Int32, Bool) {
        try slot.withLock { (slot: inout Slot) throws(Errno) -> (Int32, Bool) in
            var overBudget = false
            if slot.fd < 0 {
                if slot.lent < 0, let open = slot.openFiles.keys.first { slot.lent = open }
                if slot.lent >= 0 {
                    slot.pins += 1
                    slot.referenced = true
                    return (slot.lent, false)
                }
                guard let pool, let handle = slot.handle else { throw Errno(rawValue: ESTALE) }
                (slot.fd, overBudget) = try pool.reopen(handle, expecting: slot.key)
            }
            slot.pins += 1
            slot.referenced = true
            return (slot.fd, overBudget)
        }
    }

    private func unpin() {
        slot.withLock { slot in
            slot.pins -= 1
            guard slot.pins == 0, slot.lent >= 0 else { return }
            if slot.closeLentAtUnpin { close(slot.lent) }
            slot.lent = -1
            slot.closeLentAtUnpin = false
        }
    }

    // MARK: names and open files, for copy-up

    /// Remembers the name the kernel last used for this inode.
    func remember(name: UnsafePointer<CChar>, in parent: Inode) {
        let bytes = Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
        slot.withLock { $0.name = (parent, bytes) }
    }

    var rememberedName: (parent: Inode, name: [CChar])? { slot.withLock { $0.name } }

    var isOpenForWriting: Bool {
        slot.withLock { $0.openFiles.values.contains { $0 & O_ACCMODE != O_RDONLY } }
    }

    /// Runs `body` with the backing descriptor of one of the inode's open files that can
    /// write (`writable`) or read, held open meanwhile; nil when no open file can.
    /// For the page cache's write-back and loads (lock order: cache, then this slot).
    func withOpenDescriptor<R>(writable: Bool, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R? {
        try slot.withLock { (slot: inout Slot) throws(Errno) -> R? in
            // The backing descriptor's own access mode (a write-only open may be read/write there).
            let found = slot.openFiles.first { (fd, _) in
                let access = fcntl(fd, F_GETFL) & O_ACCMODE
                return writable ? access != O_RDONLY : access != O_WRONLY
            }
            guard let fd = found?.key else { return nil }
            return try body(fd)
        }
    }

    /// After a descriptor was opened for a handle on this inode (counted by ``opened(fd:flags:offer:)``
    /// or ``directoryOpened()``): if descriptors now pass the pool's budget, closes idle
    /// `SNAPFS_O_PATH` ones. Call with no inode lock held.
    func relieveDescriptorPressure() {
        if let pool, pool.isOverBudget { pool.sweep() }
    }

    /// A directory handle opened a descriptor of this inode: it counts against the pool's budget.
    func directoryOpened() {
        pool?.handleOpened()
        relieveDescriptorPressure()
    }

    /// A directory handle counted by ``directoryOpened()`` closed its descriptor.
    func directoryClosed() {
        pool?.handleClosed()
    }

    /// Number of open files (descriptors of ``OpenFile``s) on the inode.
    var openFileCount: Int { slot.withLock { $0.openFiles.count } }

    /// Registers a read/write descriptor of an open file (see ``OpenFile``) and chooses how
    /// the kernel serves it. While the inode is in passthrough mode every open file joins
    /// it (the kernel fails any other open of the inode with EIO): `reads` if `offer` was
    /// given (the open may read the backing file directly), else `directIO` (its I/O still
    /// comes to the daemon). The first open starts passthrough mode only if no other file is
    /// open on the inode (a file the kernel caches would make it refuse) and `offer`
    /// registers the backing file with the kernel.
    /// `direct` chooses, for the first open file, whether the inode's files bypass the
    /// kernel's page cache until the last one closes (``Slot/kernelDirect``); also returned:
    /// whether this open must drop the kernel's cached pages (the first cached open after
    /// direct ones).
    func opened(fd: Int32, flags: Int32, offer: (() -> Int32?)? = nil,
                direct: (() -> Bool)? = nil) -> (PassthroughMode, kernelDirect: Bool, dropsKernelPages: Bool) {
        slot.withLock { slot in
            var drops = false
            if slot.openFiles.isEmpty && slot.passthrough == nil {
                slot.kernelDirect = direct?() ?? false
                if slot.kernelDirect {
                    slot.kernelPagesStale = true
                } else {
                    drops = slot.kernelPagesStale
                    slot.kernelPagesStale = false
                }
            }
            return (opened(&slot, fd: fd, flags: flags, offer: offer), slot.kernelDirect, drops)
        }
    }

    private func opened(_ slot: inout Slot, fd: Int32, flags: Int32, offer: (() -> Int32?)?) -> PassthroughMode {
        defer {
            slot.openFiles[fd] = flags
            pool?.handleOpened()
        }
        if var state = slot.passthrough {
            state.handles += 1
            if offer == nil && flags & O_ACCMODE != O_RDONLY { state.writerJoined = true }
            slot.passthrough = state
            return offer == nil ? .directIO(id: state.id) : .reads(id: state.id)
        }
        guard let offer, slot.openFiles.isEmpty, let id = offer() else { return .none }
        slot.passthrough = PassthroughState(id: id, key: slot.key, handles: 1, writerJoined: false)
        return .reads(id: id)
    }

    /// Whether the kernel reads this inode's backing file directly (passthrough mode).
    var inPassthroughMode: Bool { slot.withLock { $0.passthrough != nil } }

    /// Whether the inode has no open file (so passthrough mode could start).
    var hasNoOpenFile: Bool { slot.withLock { $0.openFiles.isEmpty && $0.passthrough == nil } }

    /// Unregisters and closes an open file's descriptor, under the lock a copy-up holds
    /// while it moves descriptors, so the number is never reused in between. Returns the
    /// passthrough mode that ends with this file (the last one in it), if any.
    func closeOpenFile(fd: Int32, passthrough: Bool) -> PassthroughState? {
        slot.withLock { slot in
            slot.openFiles[fd] = nil
            if fd == slot.lent {
                // Borrowed in withFD right now: closed by the last unpin.
                slot.closeLentAtUnpin = true
            } else {
                close(fd)
            }
            pool?.handleClosed()
            guard passthrough, var state = slot.passthrough else { return nil }
            state.handles -= 1
            if state.handles > 0 {
                slot.passthrough = state
                return nil
            }
            slot.passthrough = nil
            return state
        }
    }

    /// An inode in passthrough mode: the kernel's id of its backing file, that file's
    /// identity, how many open files use it, and whether one of them could write.
    struct PassthroughState {
        let id: Int32
        let key: BackingKey
        var handles: Int
        var writerJoined: Bool
    }

    /// After a copy-up: the inode now stands for the object of `pathFD` (taken over), and
    /// every open file's descriptor is replaced, number for number, by one of the new object
    /// opened with `reopen`. Returns the old key.
    func replaceBacking(with pathFD: Int32, key newKey: BackingKey,
                        reopen: (Int32, Int32) throws(Errno) -> Int32) throws(Errno) -> BackingKey {
        try slot.withLock { (slot: inout Slot) throws(Errno) -> BackingKey in
            // Open everything first, so a failure leaves every file on the old object.
            var replacements: [(Int32, Int32)] = []
            do throws(Errno) {
                for (fd, flags) in slot.openFiles {
                    replacements.append((fd, try reopen(pathFD, flags)))
                }
            } catch {
                for (_, newFD) in replacements { close(newFD) }
                throw error
            }
            for (fd, newFD) in replacements {
                dup2(newFD, fd)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                close(newFD)
            }
            let oldKey = slot.key
            if slot.fd >= 0 {
                // Same number, new object: borrowers in withFD right now keep a valid descriptor.
                dup2(pathFD, slot.fd)
                _ = fcntl(slot.fd, F_SETFD, FD_CLOEXEC)
                close(pathFD)
            } else {
                slot.fd = pathFD
                pool?.opened()
            }
            slot.key = newKey
            slot.handle = nil
            slot.pinnedForever = false
            slot.referenced = true
            return oldKey
        }
    }

    /// What ``claim(_:)`` found.
    enum Claim {
        /// The inode's descriptor is open, so its backing object cannot have been replaced:
        /// `fd` names the same object and stays the caller's to close.
        case alreadyOpen
        /// The descriptor had been closed and `fd` names the same object (same file
        /// handle): the inode took `fd` over.
        case adopted
        /// The descriptor had been closed and the object it named is gone; `fd` names a new
        /// object that reuses the inode number. The caller needs a new inode.
        case stale
    }

    /// Checks that `fd`, opened on an object with this inode's device and inode number, is
    /// this inode's object. Inode numbers are reused once an object is deleted, and a
    /// closed descriptor no longer keeps a deleted object alive.
    func claim(_ fd: Int32) -> Claim {
        guard let pool else { return .alreadyOpen }
        return slot.withLock { slot in
            if slot.fd >= 0 { return .alreadyOpen }
            guard let handle = pool.handle(of: fd), handle == slot.handle else { return .stale }
            slot.fd = fd
            slot.referenced = true
            pool.opened()
            return .adopted
        }
    }

    /// Whether the descriptor is open now (for tests and statistics).
    public var hasOpenDescriptor: Bool { slot.withLock { $0.fd >= 0 } }

    /// One step of the pool's clock sweep: closes the descriptor if no one borrows it and
    /// it was not used since the previous sweep (`force`: used or not). Returns whether
    /// it closed one.
    /// `onlyWithOpenFiles`: only an inode with an open file, whose descriptor costs nothing
    /// to do without (``withFD(_:)`` lends the file's meanwhile).
    func evictIfIdle(force: Bool, onlyWithOpenFiles: Bool = false) -> Bool {
        guard let pool else { return false }
        return slot.withLock { slot in
            guard slot.fd >= 0, slot.pins == 0, !slot.pinnedForever else { return false }
            if onlyWithOpenFiles && slot.openFiles.isEmpty { return false }
            if slot.referenced && !force && !onlyWithOpenFiles {
                slot.referenced = false
                return false
            }
            if slot.handle == nil {
                slot.handle = pool.handle(of: slot.fd)
                if slot.handle == nil {
                    slot.pinnedForever = true
                    return false
                }
            }
            close(slot.fd)
            slot.fd = -1
            pool.closed()
            return true
        }
    }
}

/// Keeps the number of open `SNAPFS_O_PATH` descriptors under a budget derived from the
/// process's descriptor limit, for one backing filesystem (objects on other filesystems
/// mounted inside the backing tree keep their descriptors).
final class DescriptorPool: Sendable {
    /// A descriptor of the backing root opened for reading (`open_by_handle_at` refuses
    /// `SNAPFS_O_PATH` ones); owned by the pool.
    private let mountFD: Int32
    let device: UInt64
    let budget: Int
    private let openCount = Atomic<Int>(0)
    /// Descriptors of open files and directories on inodes of the pool: not the pool's to
    /// close, but they share its budget (a user holding many files open must make the pool
    /// close idle `SNAPFS_O_PATH` descriptors, not run the process out of descriptors).
    private let handleCount = Atomic<Int>(0)
    private let sweeping = Atomic<Bool>(false)
    /// The table whose inodes a sweep visits, set by ``InodeTable/init(rootFD:descriptorBudget:)``
    /// (held weakly: the table owns the pool). A reference, not a closure: reading a function
    /// value back out of `Mutex.withLock` wraps it in one more reabstraction thunk on every
    /// access — measured here: the chain grew until the daemon overflowed its stack.
    private let owner = Mutex(WeakTable())

    private struct WeakTable {
        weak var table: InodeTable?
    }

    /// Called once by the table that owns the pool.
    func attach(to table: InodeTable) {
        owner.withLock { $0.table = table }
    }

    /// A pool for the filesystem of `rootFD`, or nil when descriptors cannot be reopened by
    /// handle there (the filesystem has no handles, or the daemon lacks
    /// CAP_DAC_READ_SEARCH): then every inode keeps its descriptor.
    static func make(rootFD: Int32, rootKey: BackingKey, budget: Int? = nil) -> DescriptorPool? {
        let mountFD = snapfs_openat(AT_FDCWD, "/proc/self/fd/\(rootFD)", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard mountFD >= 0 else { return nil }
        let pool = DescriptorPool(mountFD: mountFD, device: rootKey.device, budget: budget ?? defaultBudget())
        guard let handle = pool.handle(of: rootFD), let (fd, _) = try? pool.reopen(handle, expecting: rootKey) else { return nil }
        close(fd)
        pool.closed()
        return pool
    }

    /// Three quarters of the descriptor limit, leaving the rest for open files and directories.
    static func defaultBudget() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 768 }
        let current = Int(min(limit.rlim_cur, 1 << 30))
        return max(64, current - max(256, current / 4))
    }

    private init(mountFD: Int32, device: UInt64, budget: Int) {
        self.mountFD = mountFD
        self.device = device
        self.budget = budget
    }

    deinit { close(mountFD) }

    /// `SNAPFS_O_PATH` descriptors open.
    var open: Int { openCount.load(ordering: .relaxed) }
    /// Descriptors of open files and directories.
    var handles: Int { handleCount.load(ordering: .relaxed) }

    /// What `SNAPFS_O_PATH` descriptors may use now: the budget less the handles' descriptors,
    /// but never less than a few (each request borrows at most two at once).
    private var pathBudget: Int { max(min(budget, 16), budget - handles) }

    var isOverBudget: Bool { open > pathBudget }

    /// A descriptor of this pool was opened. Returns whether the pool is now over budget.
    @discardableResult
    func opened() -> Bool {
        openCount.wrappingAdd(1, ordering: .relaxed).newValue > pathBudget
    }

    func handleOpened() { handleCount.wrappingAdd(1, ordering: .relaxed) }

    func handleClosed() { handleCount.wrappingSubtract(1, ordering: .relaxed) }

    func closed() {
        openCount.wrappingSubtract(1, ordering: .relaxed)
    }

    func handle(of fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 8 + 128)
        let size = buffer.withUnsafeMutableBufferPointer { snapfs_handle_of(fd, $0.baseAddress, $0.count) }
        guard size > 0 else { return nil }
        return Array(buffer[0..<Int(size)])
    }

    /// Reopens a closed descriptor; returns it and whether the pool is now over budget.
    func reopen(_ handle: [UInt8], expecting key: BackingKey) throws(Errno) -> (Int32, Bool) {
        var handle = handle
        let fd = try syscall(handle.withUnsafeMutableBufferPointer {
            snapfs_open_by_handle(mountFD, $0.baseAddress, SNAPFS_O_PATH | O_CLOEXEC)
        })
        do throws(Errno) {
            guard BackingKey(try FileStatus.of(fd)) == key else { throw Errno(rawValue: ESTALE) }
        } catch {
            close(fd)
            throw error
        }
        return (fd, opened())
    }

    /// Closes idle descriptors until the pool is at three quarters of its budget: first
    /// those of inodes with an open file (which lends its descriptor meanwhile), then the
    /// others, oldest use first (a clock sweep). One sweep runs at a time; it works on a
    /// snapshot of the table, so no table lock is held while inodes are locked. Callers
    /// hold no inode lock.
    func sweep() {
        guard let table = owner.withLock({ $0.table }) else { return }
        guard !sweeping.exchange(true, ordering: .acquiring) else { return }
        defer { sweeping.store(false, ordering: .releasing) }
        let target = pathBudget * 3 / 4
        let all = table.allInodes()
        if handles > 0 {
            for inode in all where open > target {
                _ = inode.evictIfIdle(force: true, onlyWithOpenFiles: true)
            }
        }
        for force in [false, false, true] where open > target {
            for inode in all where open > target {
                _ = inode.evictIfIdle(force: force)
            }
        }
    }
}
