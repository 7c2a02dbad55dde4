import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// A tree snapshot built in the background while the live tree keeps changing: the state
/// at one moment (the epoch) is kept by copy-before-write at the gate.
///
/// At the epoch the freeze gate is closed only to write the cache back, make the empty
/// top and install this capture (``SnapshotState``). Then threads walk the backing tree as
/// ``TreeCloner`` does, directory by directory, while changes go on. A change first
/// captures what it is about to change, if the walk has not yet:
/// - a directory whose entries change (create, unlink, rename, link, rmdir, its own
///   attributes): its listing, at once (``captureDirectory(_:)``), so that the walk, which
///   skips it afterwards, never sees a name made after the epoch nor misses one removed;
/// - any other object whose data or attributes change: a clone of it in the stash
///   (``captureObject(_:_:)``), named by its inode number. When the walk meets that inode
///   number in a listing, it links the stashed clone into place instead of cloning the
///   live object.
///
/// Why this is exact: a directory not yet captured has had no entry changed since the
/// epoch (the change would have captured it first), so its listing now is its listing at
/// the epoch; an object not yet captured has not changed since the epoch (likewise); and
/// a directory not yet captured is found by its parent's file handle and its name, which
/// no change moves without capturing it first.
/// Objects with several names are cloned once, into the stash, and linked from there
/// under each name, so they stay linked to each other in the snapshot.
///
/// A directory's own metadata is applied (and the directory sealed) once its entries are
/// made: nothing made later, inside its subdirectories, changes its times. A failure
/// (a full disk) fails the snapshot, never a change: every capture becomes a no-op.
public final class TreeCapture: @unchecked Sendable {
    /// The building name under `.snapshots` (`.building-NAME`).
    public let building: String
    let run: CloneRun
    let threads: Int
    /// `.snapshots`, where `building` and the stash are (not owned).
    let store: Int32
    /// The backing root (not owned); also the mount descriptor for source handles.
    let sourceRoot: Int32
    let stashName: String
    private let stash: Int32
    /// Where an object is linked before the stash clone is made of it by name.
    private let incoming: Int32
    /// For that link, and to reopen an object for reading, by its descriptor.
    private let proc: ProcSelfFD
    private let rootInode: UInt64
    /// Files copied by chunks, by inode number, and their copies once made (under `monitor`).
    private let ranged: Set<UInt64>
    private var copies: [UInt64: RangedCopy] = [:]
    /// Those of `copies` the walk linked into the snapshot (under `monitor`). A file left
    /// out by the exclude patterns may have been captured by a change, but is neither
    /// filled nor finished.
    private var placedCopies: Set<UInt64> = []
    private let rootDevice: UInt64
    /// The top of the building tree (the root's copy).
    private let topHandle: [UInt8]

    private enum DirectoryState {
        /// Listed in its parent's capture: its copy exists, its entries are not made yet.
        /// Where it is (nil: the root).
        case placeholder(Location?)
        case capturing
        /// Listed (or found to be new since the epoch, so no part of the snapshot).
        case captured
    }

    private enum ObjectState {
        case busy
        /// Cloned into its place by the walk (one name only).
        case placed
        /// Cloned into the stash, `stash/INODE`.
        case stashed
    }

    /// Where a directory not yet captured is: the file handles of its parent and of the
    /// parent's copy, and its name there. Good until it is captured: a change that would
    /// move or remove it captures it first.
    private struct Location {
        let source: [UInt8]
        let target: [UInt8]
        let name: [CChar]
        /// Its path relative to the root while exclude patterns with `/` can still match
        /// its entries (bounded by the deepest such pattern), else nil.
        let path: [UInt8]?
    }

    /// A directory for the walk: its source inode number and where it is (nil: the root).
    private struct Job {
        let inode: UInt64
        let location: Location?
    }

    // Guarded by `monitor`, broadcast whenever a directory leaves capturing.
    private let monitor = Monitor()
    private var directories: [UInt64: DirectoryState] = [:]
    /// Directories holding a file copied by chunks: their journals are played back, and
    /// their metadata applied, once the copies are complete (in ``finish()``).
    private var deferred: [Completion] = []

    /// What completes a directory's copy once its entries are all made: the hot journals
    /// to play back and the databases to finish (see ``SQLiteCompanion``), then its
    /// metadata at the epoch (and, below the top, its seal).
    private struct Completion {
        let journals: [[CChar]]
        let databases: [[CChar]]
        let status: stat
        let attributes: [(name: [CChar], value: [UInt8])]
        let isTop: Bool
        /// The copy's handle in the store.
        let target: [UInt8]

        /// Applies it to the copy open at `fd` (left open). A database that the stash also
        /// holds is sealed by ``TreeCapture/finish()``, once the stash is gone.
        func apply(to fd: Int32, in capture: TreeCapture) throws(Errno) {
            let directory = CloneDirectory(parent: nil, name: "", isLinkOrigin: isTop)
            directory.target = fd
            defer { directory.target = -1 }
            directory.journals = journals
            directory.databases = databases
            directory.status = status
            directory.attributes = attributes
            try SQLiteCompanion.complete(directory) { capture.noteSealLater($0, target) }
            try directory.applyMetadata()
        }
    }
    /// Companion files and databases linked from the stash (sealed once the stash is gone:
    /// the seal would refuse the stash's own unlink). Target directory handle and name.
    private var sealLater: [(directory: [UInt8], name: [CChar])] = []
    private var placeholders = 0
    /// Directories captured (listed, or failed); the snapshot's count once it succeeds.
    private var captures = 0
    /// Directories being captured.
    private var busy = 0
    private var failure: Errno?
    private var finished = false
    /// The objects' states, in shards with a lock each: the walk's threads, one per
    /// directory, take one for every entry, and a single lock would have them queue.
    private let shards = (0..<TreeCapture.shardCount).map { _ in ObjectShard() }
    private static let shardCount = 64
    /// Finished or failed: every capture is a no-op from now on.
    private let stopped = Atomic<Bool>(false)
    /// Objects being captured.
    private let busyObjects = Atomic<Int>(0)
    /// Objects stashed so far; the walk looks objects up in the stash only once there are
    /// any, and rechecks a directory if the count moved while it was made.
    private let stashesCompleted = Atomic<Int>(0)
    private var totals = CloneStatistics()
    private let stack = WorkStack<Job>()

    /// The handle buffer: a `struct file_handle` (8 bytes) and up to `MAX_HANDLE_SZ` (128).
    private static let handleSize = 136

    /// Whether background builds work on the backing filesystem: file handles of its
    /// directories can be taken and opened again (which needs CAP_DAC_READ_SEARCH).
    public static func supported(sourceRoot: Int32) -> Bool {
        guard let handle = try? handle(of: sourceRoot), let fd = try? open(handle, in: sourceRoot, O_RDONLY) else { return false }
        close(fd)
        return true
    }

    /// Opens the top `building` and the stash that ``prepare(store:building:)`` made in
    /// `store`, and queues the root. Inside the frozen gate: this is the epoch. On failure
    /// removes them.
    /// `expectedObjects`: about how many files the tree holds (the newest snapshot's count),
    /// so that the tables are sized once.
    /// `ranged`: inode numbers of large files open for writing at the epoch, copied by
    /// chunks (``RangedCopy``) with the hardlink and copy methods.
    public init(method: CloneMethod, threads: Int = TreeCloner.defaultThreads, copyInstead: Set<BackingKey>,
                sourceRoot: Int32, store: Int32, building: String, excludeAtTop: Set<String>,
                exclusions: SnapshotExclusions = .none, expectedObjects: Int = 0, ranged: Set<UInt64> = []) throws(Errno) {
        self.building = building
        self.run = CloneRun(method: method, excludedAtTop: excludeAtTop, copyInstead: copyInstead, exclusions: exclusions)
        self.threads = max(threads, 1)
        self.ranged = method == .reflink ? [] : ranged
        self.store = store
        self.sourceRoot = sourceRoot
        stashName = building + ".stash"
        let perShard = min(expectedObjects, 1 << 24) / Self.shardCount
        if perShard > 0 { for shard in shards { shard.states.reserveCapacity(perShard + perShard / 8) } }
        var root = stat()
        try syscall(fstat(sourceRoot, &root))
        rootInode = UInt64(root.st_ino)
        rootDevice = UInt64(root.st_dev)
        proc = try ProcSelfFD()
        do throws(Errno) {
            let top = try Self.open(store, building, O_RDONLY | O_DIRECTORY)
            defer { close(top) }
            topHandle = try Self.handle(of: top)
            stash = try Self.open(store, stashName, O_RDONLY | O_DIRECTORY)
            do throws(Errno) { incoming = try Self.open(stash, "in", O_RDONLY | O_DIRECTORY) } catch {
                close(stash)
                throw error
            }
            directories[rootInode] = .placeholder(nil)
            placeholders = 1
            stack.push(Job(inode: rootInode, location: nil))
        } catch {
            close(proc.directory)
            Self.unprepare(store: store, building: building)
            throw error
        }
    }

    /// Makes the empty top `building` (private, as ``TreeCloner`` makes it) and the stash in
    /// `store`: before the epoch, since it waits for the disk and fixes nothing.
    public static func prepare(store: Int32, building: String) throws(Errno) {
        do throws(Errno) {
            for name in [building, building + ".stash"] {
                try name.withCName { (cName) throws(Errno) in _ = try syscall(mkdirat(store, cName, 0o700)) }
            }
            let stash = try open(store, building + ".stash", SNAPFS_O_PATH | O_DIRECTORY)
            defer { close(stash) }
            try syscall(mkdirat(stash, "in", 0o700))
            let top = try open(store, building, O_RDONLY | O_DIRECTORY)
            defer { close(top) }
            try ExtendedAttributes.removeInheritedACLs(top)
            try syscall(fchmod(top, 0o700))
        } catch {
            unprepare(store: store, building: building)
            throw error
        }
    }

    /// Removes what ``prepare(store:building:)`` made.
    public static func unprepare(store: Int32, building: String) {
        _ = try? TreeRemover.remove(parent: store, name: building + ".stash")
        _ = try? TreeRemover.remove(parent: store, name: building)
    }

    deinit {
        close(stash)
        close(incoming)
        close(proc.directory)
    }

    // MARK: the walk

    /// Walks the tree until every directory is captured, on ``threads`` threads (the caller's
    /// among them); then no change captures anything more. Throws the first failure.
    public func walk() throws(Errno) {
        stack.run(threads: threads) { [self] next in
            let worker = CloneWorker(run: run)
            while let job = next() {
                if failed { continue }
                captureDirectory(inode: job.inode, worker: worker) { (location) throws(Errno) -> Int32 in
                    guard let location else { return try syscall(dup(sourceRoot)) }
                    let parent = try Self.open(location.source, in: sourceRoot, SNAPFS_O_PATH)
                    defer { close(parent) }
                    let fd = try syscall(snapfs_openat(parent, location.name, SNAPFS_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
                    var status = stat()
                    // Nothing moved it (that would have captured it first); a mount point
                    // on it shows another filesystem's root.
                    if fstat(fd, &status) != 0 || (UInt64(status.st_ino) != job.inode && UInt64(status.st_dev) == rootDevice) {
                        close(fd)
                        throw Errno(rawValue: ESTALE)
                    }
                    return fd
                }
            }
            add(worker.statistics)
        }
        // Chunks of the files copied by chunks that no change has copied yet; changes go on.
        monitor.lock()
        let ongoing = copies.filter { placedCopies.contains($0.key) }.map(\.value)
        monitor.unlock()
        for copy in ongoing where !failed {
            do throws(Errno) { try copy.fill() } catch { fail(error) }
        }
        monitor.lock()
        finished = true
        stopped.store(true, ordering: .releasing)
        while busy > 0 { monitor.wait() }
        monitor.unlock()
        // A claim reads `stopped` and counts itself busy under its shard's lock: once every
        // shard's lock has been taken after the store, each claim either counted itself or
        // saw `stopped`. Without this a claim that read `stopped` just before the store could
        // count itself after the check below, and link into the stash while it is removed.
        for shard in shards {
            shard.monitor.lock()
            shard.monitor.unlock()
        }
        // A capture that began before the end finishes its clone (microseconds).
        while busyObjects.load(ordering: .acquiring) > 0 { usleep(100) }
        // Read last: a capture that was still running may have failed.
        monitor.lock()
        let error = failure
        monitor.unlock()
        if let error { throw error }
    }

    /// After ``walk()``: removes the stash, seals the companion files linked from it, and
    /// returns the counts. On failure the caller removes what was built.
    public func finish() throws(Errno) -> CloneStatistics {
        for (inode, copy) in copies {
            if placedCopies.contains(inode) { try copy.finish() } else { copy.abandon() }
        }
        copies.removeAll()
        for waiting in deferred {
            let target = try Self.open(waiting.target, in: store, O_RDONLY)
            defer { close(target) }
            try waiting.apply(to: target, in: self)
        }
        deferred.removeAll()
        try TreeRemover.remove(parent: store, name: stashName)
        for (directory, name) in sealLater {
            let dir = try Self.open(directory, in: store, SNAPFS_O_PATH)
            defer { close(dir) }
            let fd = snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var status = stat()
            if fstat(fd, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && status.st_nlink == 1 { try Seal.apply(fd) }
        }
        var counts = totals
        counts.directories = captures
        return counts
    }

    /// Removes whatever was made (the building tree and the stash), after a failure.
    public func discard() {
        for copy in copies.values { copy.closeDescriptors() }
        _ = try? TreeRemover.remove(parent: store, name: stashName)
        _ = try? TreeRemover.remove(parent: store, name: building)
    }

    /// Directories listed but not yet captured, and captures so far (for `status`).
    public var progress: (waiting: Int, captured: Int) {
        monitor.lock()
        defer { monitor.unlock() }
        return (placeholders, captures)
    }

    // MARK: capture by a change

    /// A change is about to alter the entries or attributes of the directory `fd` (any
    /// descriptor of it, `O_PATH` will do): captures it first if it was part of the tree at
    /// the epoch and is not captured yet.
    public func captureDirectory(_ fd: Int32) {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else { return }
        let inode = UInt64(status.st_ino)
        switch state(of: inode) {
        case .done: return
        case .known: break
        case .unknown:
            // Its parent has not been listed: capture the way down to it first.
            guard locateByParents(fd) else { return }
        }
        let worker = CloneWorker(run: run)
        captureDirectory(inode: inode, worker: worker) { (_) throws(Errno) -> Int32 in try syscall(dup(fd)) }
        add(worker.statistics)
    }

    /// What a change does to an object, for the files copied by chunks.
    public enum Change: Sendable {
        /// Its attributes only.
        case metadata
        /// Its bytes in `offset ..< offset + length`.
        case bytes(offset: Int64, length: Int64)
        /// Its size, set to this.
        case size(Int64)
    }

    /// A change is about to alter the data or attributes of the object `fd` (not a
    /// directory; `O_PATH` will do): clones it into the stash first unless it is captured
    /// (a file copied by chunks: copies the chunks the change overwrites or cuts off).
    /// An object made after the epoch is stashed too (it cannot be told apart), and never used.
    public func captureObject(_ fd: Int32, _ change: Change) {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT != S_IFDIR, status.st_nlink > 0 else { return }
        let inode = UInt64(status.st_ino)
        if !ranged.isEmpty && ranged.contains(inode) && status.st_mode & S_IFMT == S_IFREG {
            return captureRanged(inode, change) { () throws(Errno) -> Int32 in
                try proc.reopen(fd, flags: O_RDONLY | O_NONBLOCK | run.noAccessTime)
            }
        }
        guard claim(inode) == .mine else { return }
        var result = ObjectState.stashed
        do throws(Errno) {
            var name = Self.decimal(inode)
            // A name for it in `incoming`, then the clone made by name, as the walk makes them.
            try proc.link(fd, into: incoming, as: &name)
            defer { unlinkat(incoming, &name, 0) }
            let worker = CloneWorker(run: run)
            let directory = CloneDirectory(parent: nil, name: "", isLinkOrigin: false)
            directory.source = incoming
            directory.target = stash
            defer { directory.source = -1; directory.target = -1 }
            try worker.cloneEntry(&name, type: DirectoryEntries.Kind.of(mode: status.st_mode), in: directory, status: nil)
        } catch {
            result = .placed
            // A change that removed its last name meanwhile captured that name's directory
            // first, and with it the object as it was: nothing is left to take (an object
            // with no name cannot be linked, ENOENT). Seen with the kernel's own setattr of
            // a file's times racing its unlink.
            var now = stat()
            if error != .noSuchFileOrDirectory || fstat(fd, &now) != 0 || now.st_nlink != 0 { fail(error) }
        }
        settle(inode, result)
        if result == .stashed { stashesCompleted.wrappingAdd(1, ordering: .releasing) }
    }

    /// A file copied by chunks: made (empty, at its size at the epoch) in the stash the first
    /// time, from `open` (a descriptor to read it); then the chunks `change` needs copied.
    private func captureRanged(_ inode: UInt64, _ change: Change, open: () throws(Errno) -> Int32) {
        if claim(inode) == .mine {
            var result = ObjectState.stashed
            do throws(Errno) {
                let source = try open()
                do throws(Errno) {
                    var status = stat()
                    try syscall(fstat(source, &status))
                    guard status.st_mode & S_IFMT == S_IFREG else { throw Errno(rawValue: ESTALE) }
                    let buffers = ExtendedAttributes()
                    defer { buffers.deallocate() }
                    let attributes = try buffers.read(.descriptor(source))
                    var name = Self.decimal(inode)
                    let target = try syscall(snapfs_openat(stash, &name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600))
                    do throws(Errno) { try syscall(ftruncate(target, status.st_size)) } catch {
                        close(target)
                        throw error
                    }
                    let copy = RangedCopy(source: source, target: target, status: status, attributes: attributes)
                    monitor.lock()
                    copies[inode] = copy
                    monitor.unlock()
                } catch {
                    close(source)
                    throw error
                }
            } catch {
                fail(error)
                result = .placed
            }
            settle(inode, result)
            if result == .stashed { stashesCompleted.wrappingAdd(1, ordering: .releasing) }
        }
        monitor.lock()
        let copy = copies[inode]
        monitor.unlock()
        guard let copy else { return }
        do throws(Errno) {
            switch change {
            case .metadata: break
            case let .bytes(offset, length): try copy.ensure(from: offset, length: length)
            case let .size(size): try copy.ensure(from: size, length: Int64(copy.status.st_size) - size)
            }
        } catch {
            fail(error)
        }
    }

    /// After a change made the entry `name` in the directory `parent`: if it is a new object
    /// (one name, or a new directory), it is no part of the snapshot, and its changes need
    /// no capture. (A new name of an existing object, by `link`, has more than one.)
    public func noteCreated(_ name: UnsafePointer<CChar>, in parent: Int32) {
        var status = stat()
        guard fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        let inode = UInt64(status.st_ino)
        if status.st_mode & S_IFMT == S_IFDIR {
            monitor.lock()
            if directories[inode] == nil { directories[inode] = .captured }
            monitor.unlock()
        } else if status.st_nlink == 1 {
            let shard = shard(of: inode)
            shard.monitor.lock()
            if shard.states[inode] == nil { shard.states[inode] = .placed }
            shard.monitor.unlock()
        }
    }

    // MARK: directories

    private enum Lookup { case done, known, unknown }

    private func state(of inode: UInt64) -> Lookup {
        monitor.lock()
        defer { monitor.unlock() }
        if finished || failure != nil { return .done }
        switch directories[inode] {
        case .captured?: return .done
        case nil: return .unknown
        default: return .known
        }
    }

    /// Captures the not yet listed parents of the directory `fd`, from the nearest listed
    /// one down; false when `fd` turns out to be new since the epoch. Holds a descriptor per
    /// level; a chain deeper than ``deepestChain`` waits for the walk to reach it instead.
    private func locateByParents(_ fd: Int32) -> Bool {
        var chain: [Int32] = []
        defer { for parent in chain { close(parent) } }
        var current = fd
        while true {
            let parent = snapfs_openat(current, "..", SNAPFS_O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
            guard parent >= 0 else { return false }
            chain.append(parent)
            var status = stat()
            guard fstat(parent, &status) == 0 else { return false }
            if state(of: UInt64(status.st_ino)) != .unknown { break }
            if chain.count >= Self.deepestChain { return waitUntilKnown(fd) }
            current = parent
        }
        for parent in chain.reversed() { captureDirectory(parent) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { return false }
        monitor.lock()
        defer { monitor.unlock() }
        if directories[UInt64(status.st_ino)] == nil {
            directories[UInt64(status.st_ino)] = .captured  // new since the epoch
            return false
        }
        return true
    }

    static let deepestChain = 64

    private func waitUntilKnown(_ fd: Int32) -> Bool {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return false }
        monitor.lock()
        defer { monitor.unlock() }
        while directories[UInt64(status.st_ino)] == nil && !finished && failure == nil {
            monitor.wait()
        }
        return directories[UInt64(status.st_ino)] != nil
    }

    /// Captures the directory `inode` unless it is captured; waits while another thread
    /// captures it. `open` gives a descriptor of it (closed here), from where it is.
    private func captureDirectory(inode: UInt64, worker: CloneWorker, open: (Location?) throws(Errno) -> Int32) {
        monitor.lock()
        var claimed: Location??
        while failure == nil {
            switch directories[inode] {
            case .capturing?:
                monitor.wait()
                continue
            case .placeholder(let location)?:
                claimed = .some(location)
                directories[inode] = .capturing
                busy += 1
            case .captured?, nil:
                break
            }
            break
        }
        monitor.unlock()
        guard let location = claimed else { return }
        var error: Errno?
        do throws(Errno) {
            let fd = try open(location)
            defer { close(fd) }
            let target: Int32
            if let location {
                let parent = try Self.open(location.target, in: store, SNAPFS_O_PATH)
                defer { close(parent) }
                target = try syscall(snapfs_openat(parent, location.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
            } else {
                target = try Self.open(topHandle, in: store, O_RDONLY)
            }
            try list(inode: inode, source: fd, target: target, path: location.map(\.path) ?? run.exclusions.topPath, worker: worker)
        } catch let failed {
            error = failed
        }
        if let error { run.fail(error); stopped.store(true, ordering: .releasing) }
        monitor.lock()
        if let error, failure == nil { failure = error }
        directories[inode] = .captured
        placeholders -= 1
        captures += 1
        busy -= 1
        monitor.broadcast()
        monitor.unlock()
    }

    /// Recreates the entries of the directory `source` in its copy, records its metadata,
    /// queues its subdirectories.
    /// `target`: its copy, open (closed here). `path`: see ``Location/path``.
    /// Entries the user's patterns exclude are skipped: never placed, never queued.
    private func list(inode: UInt64, source sourcePath: Int32, target targetFD: Int32, path: [UInt8]?,
                      worker: CloneWorker) throws(Errno) {
        let directory = CloneDirectory(parent: nil, name: "", isLinkOrigin: false)
        defer { directory.closeDescriptors() }
        directory.path = path
        directory.target = targetFD
        directory.source = try syscall(snapfs_openat(sourcePath, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | run.noAccessTime, 0))
        let target = try Self.handle(of: targetFD)
        var sourceHandle: [UInt8]?
        try syscall(fstat(directory.source, &directory.status))
        let attributes = try worker.attributes.read(.descriptor(directory.source))
        let isTop = inode == rootInode
        let stashesBefore = stashesCompleted.load(ordering: .acquiring)
        try DirectoryEntries.forEachWithInode(in: directory.source, buffer: worker.entries) { (name, type, entryInode) throws(Errno) in
            if failed { throw .canceled }
            if isTop && run.isExcludedAtTop(name) { return }
            if run.excluding && run.isExcluded(name, in: directory) { return }
            var type = type
            var known: stat?
            if type == DirectoryEntries.Kind.unknown {
                var status = stat()
                try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW))
                type = DirectoryEntries.Kind.of(mode: status.st_mode)
                known = status
            }
            if type == DirectoryEntries.Kind.directory {
                if sourceHandle == nil { sourceHandle = try Self.handle(of: directory.source) }
                let location = Location(source: sourceHandle!, target: target,
                                        name: Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)),
                                        path: run.excluding ? run.exclusions.childPath(name, of: path) : nil)
                try addSubdirectory(location, inode: known.map { UInt64($0.st_ino) } ?? entryInode, in: directory)
            } else {
                try place(name, type: type, inode: entryInode, in: directory, status: known, worker: worker, parent: target)
            }
        }
        if stashesCompleted.load(ordering: .acquiring) != stashesBefore {
            try recheck(directory, parent: target, isTop: isTop, worker: worker)
        }
        let completion = Completion(journals: directory.journals, databases: directory.databases, status: directory.status,
                                    attributes: attributes, isTop: isTop, target: target)
        if directory.holdsChunkedCopy {
            monitor.lock()
            deferred.append(completion)
            monitor.unlock()
        } else {
            // Complete: what is made later inside its subdirectories leaves its times alone.
            try completion.apply(to: directory.target, in: self)
        }
    }

    /// Makes the (empty, private) copy of a subdirectory and queues it; it is opened when
    /// its turn comes (so a listing reads no inode of its subdirectories).
    private func addSubdirectory(_ location: Location, inode: UInt64, in directory: CloneDirectory) throws(Errno) {
        try syscall(mkdirat(directory.target, location.name, 0o700))
        monitor.lock()
        let fresh = directories[inode] == nil
        if fresh {
            directories[inode] = .placeholder(location)
            placeholders += 1
        }
        monitor.unlock()
        if fresh { stack.push(Job(inode: inode, location: location)) }
    }

    // MARK: other objects

    /// Recreates the entry `name` (not a directory) of a directory being captured: linked
    /// from the stash if a change stashed it; otherwise cloned (without a lock: see
    /// ``recheck(_:parent:isTop:worker:)``), and (reflink, copy) an object with several names is also
    /// registered in the stash, for its other names.
    private func place(_ name: UnsafePointer<CChar>, type: UInt8, inode: UInt64, in directory: CloneDirectory,
                       status known: stat?, worker: CloneWorker, parent: [UInt8]) throws(Errno) {
        if !ranged.isEmpty && ranged.contains(inode) && type == DirectoryEntries.Kind.regular {
            let source = directory.source
            captureRanged(inode, .metadata) { () throws(Errno) -> Int32 in
                try syscall(snapfs_openat(source, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | run.noAccessTime, 0))
            }
            if failed { throw .canceled }
            monitor.lock()
            placedCopies.insert(inode)
            monitor.unlock()
            // Filled at the end of the walk: this directory's journals are played back and
            // its metadata applied after that (see ``deferred``).
            directory.holdsChunkedCopy = true
            return try linkFromStash(inode, as: name, in: directory, parent: parent, worker: worker)
        }
        if stashesCompleted.load(ordering: .acquiring) > 0 && isStashed(inode) {
            return try linkFromStash(inode, as: name, in: directory, parent: parent, worker: worker)
        }
        try worker.cloneEntry(name, type: type, in: directory, status: known)
        // Hard links need no stash: every name links the one live object, and a change
        // through another name copies that name up only once its directory is captured.
        guard run.method != .hardlink && worker.lastStatus.st_nlink > 1 else { return }
        let shard = shard(of: inode)
        shard.monitor.lock()
        while shard.states[inode] == .busy { shard.monitor.wait() }
        let registered = shard.states[inode] == .stashed
        if !registered {
            shard.states[inode] = .busy
            busyObjects.wrappingAdd(1, ordering: .relaxed)
        }
        shard.monitor.unlock()
        if registered {
            // Another name, or a change, put it in the stash first: that clone it is.
            try replaceWithStashed(inode, name, in: directory, parent: parent, worker: worker)
            return
        }
        var result = ObjectState.placed
        defer {
            settle(inode, result)
            if result == .stashed { stashesCompleted.wrappingAdd(1, ordering: .releasing) }
        }
        var stashed = Self.decimal(inode)
        if linkat(directory.target, name, stash, &stashed, 0) != 0 {
            // A sealed companion copy: unsealed for the link, sealed again at the end.
            guard errno == EPERM, try Seal.remove(name, in: directory.target) else { throw .current }
            try syscall(linkat(directory.target, name, stash, &stashed, 0))
            noteSealLater(name, parent)
        }
        result = .stashed
    }

    /// After a directory's entries were made: if any object was stashed meanwhile, an entry
    /// cloned without a lock may hold a change made after the stash (a change waits only
    /// for its own stash). Each such entry is replaced by the stashed clone. (The entries
    /// themselves cannot change: the directory is being captured.)
    private func recheck(_ directory: CloneDirectory, parent: [UInt8], isTop: Bool, worker: CloneWorker) throws(Errno) {
        guard lseek(directory.source, 0, SEEK_SET) == 0 else { throw .current }
        try DirectoryEntries.forEachWithInode(in: directory.source, buffer: worker.entries) { (name, type, inode) throws(Errno) in
            if type == DirectoryEntries.Kind.directory || (isTop && run.isExcludedAtTop(name)) { return }
            if run.excluding && run.isExcluded(name, in: directory) { return }
            guard isStashed(inode) else { return }
            var placed = stat()
            var stashed = stat()
            var stashName = Self.decimal(inode)
            if fstatat(directory.target, name, &placed, AT_SYMLINK_NOFOLLOW) == 0,
               fstatat(stash, &stashName, &stashed, AT_SYMLINK_NOFOLLOW) == 0,
               placed.st_ino == stashed.st_ino { return }
            try replaceWithStashed(inode, name, in: directory, parent: parent, worker: worker)
        }
    }

    private func replaceWithStashed(_ inode: UInt64, _ name: UnsafePointer<CChar>, in directory: CloneDirectory,
                                    parent: [UInt8], worker: CloneWorker) throws(Errno) {
        _ = try Seal.remove(name, in: directory.target)
        try syscall(unlinkat(directory.target, name, 0))
        worker.statistics.files -= 1
        try linkFromStash(inode, as: name, in: directory, parent: parent, worker: worker)
    }

    /// Links the stashed clone of `inode` into the directory as `name`.
    private func linkFromStash(_ inode: UInt64, as name: UnsafePointer<CChar>, in directory: CloneDirectory,
                               parent: [UInt8], worker: CloneWorker) throws(Errno) {
        var stashed = Self.decimal(inode)
        try syscall(linkat(stash, &stashed, directory.target, name, 0))
        worker.statistics.files += 1
        if SQLiteCompanion.isJournalName(name) {
            if !directory.journals.contains(where: { strcmp($0, name) == 0 }) {
                directory.journals.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
            }
        } else if SQLiteCompanion.isCompanionName(name) {
            noteSealLater(name, parent)
        } else {
            // Few (objects changed during the build, or with several names): the copy is
            // looked at when the directory completes.
            directory.databases.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
        }
    }

    private func noteSealLater(_ name: UnsafePointer<CChar>, _ parent: [UInt8]) {
        monitor.lock()
        sealLater.append((parent, Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))))
        monitor.unlock()
    }

    /// Whether a change (or another name) stashed `inode`; waits while it is being stashed.
    private func isStashed(_ inode: UInt64) -> Bool {
        let shard = shard(of: inode)
        shard.monitor.lock()
        defer { shard.monitor.unlock() }
        while shard.states[inode] == .busy { shard.monitor.wait() }
        return shard.states[inode] == .stashed
    }

    private enum Claim { case mine, taken, stopped }

    /// Marks `inode` busy if nobody captured it yet (`mine`: the caller captures it and then
    /// calls ``settle(_:_:)``); otherwise waits while it is busy and says it is `taken`;
    /// `stopped` once the capture is over or failed.
    private func claim(_ inode: UInt64) -> Claim {
        let shard = shard(of: inode)
        shard.monitor.lock()
        defer { shard.monitor.unlock() }
        while true {
            if stopped.load(ordering: .acquiring) { return .stopped }
            switch shard.states[inode] {
            case .busy?: shard.monitor.wait()
            case .placed?, .stashed?: return .taken
            case nil:
                shard.states[inode] = .busy
                busyObjects.wrappingAdd(1, ordering: .relaxed)
                return .mine
            }
        }
    }

    private func settle(_ inode: UInt64, _ state: ObjectState) {
        let shard = shard(of: inode)
        shard.monitor.lock()
        shard.states[inode] = state
        busyObjects.wrappingSubtract(1, ordering: .releasing)
        shard.monitor.broadcast()
        shard.monitor.unlock()
    }

    @inline(__always)
    private func shard(of inode: UInt64) -> ObjectShard {
        shards[Int(inode % UInt64(Self.shardCount))]
    }

    /// A part of the objects' states, with its own lock; its condition is broadcast when
    /// an object leaves busy.
    private final class ObjectShard: @unchecked Sendable {
        let monitor = Monitor()
        var states: [UInt64: ObjectState] = [:]
    }

    // MARK: helpers

    private var failed: Bool { run.failed }

    private func fail(_ error: Errno) {
        run.fail(error)
        stopped.store(true, ordering: .releasing)
        monitor.lock()
        if failure == nil { failure = error }
        monitor.broadcast()
        monitor.unlock()
    }

    private func add(_ counts: CloneStatistics) {
        monitor.lock()
        totals += counts
        monitor.unlock()
    }

    /// Opens the directory of a file handle taken on the filesystem of `mount`.
    private static func open(_ handle: [UInt8], in mount: Int32, _ flags: Int32) throws(Errno) -> Int32 {
        let fd = handle.withUnsafeBytes {
            snapfs_open_by_handle(mount, UnsafeMutablePointer(mutating: $0.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                                  flags | O_DIRECTORY | O_CLOEXEC)
        }
        return try syscall(fd)
    }

    private static func open(_ directory: Int32, _ name: String, _ flags: Int32) throws(Errno) -> Int32 {
        try name.withCName { (cName) throws(Errno) in
            try syscall(snapfs_openat(directory, cName, flags | O_NOFOLLOW | O_CLOEXEC, 0))
        }
    }

    private static func handle(of fd: Int32) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: handleSize)
        let used = try syscall(buffer.withUnsafeMutableBufferPointer { snapfs_handle_of(fd, $0.baseAddress!, $0.count) })
        return Array(buffer[0..<Int(used)])
    }

    /// The stash name of an inode: its number in decimal, NUL-terminated.
    private static func decimal(_ inode: UInt64) -> [CChar] {
        Array(String(inode).utf8CString)
    }
}
