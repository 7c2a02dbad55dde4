import CLinux
import Glibc
import Logging
import Synchronization
import SystemPackage

/// How a mount takes snapshots; chosen on `snapfs mount`.
public struct SnapshotOptions: Sendable, Equatable {
    /// nil: the best the backing filesystem supports (btrfs, then reflink, then hardlink).
    public var strategy: SnapshotStrategy?
    public var retention = RetentionPolicy()
    /// Make no snapshot when nothing changed since the newest one.
    public var skipUnchanged = true
    /// Take a snapshot this often (milliseconds), as Snapper's timeline does.
    public var intervalMs: Int64?
    /// How long a published snapshot may wait to be made durable, so that one `syncfs`
    /// covers many (milliseconds; see ``SnapshotDurability``).
    public var durableDelayMs: Int64 = 1000

    public init() {}
}

/// What a snapshot request came to.
public enum SnapshotOutcome: Sendable, Equatable {
    case created(SnapshotMetadata)
    /// Nothing changed since the newest snapshot, so none was made.
    case unchanged(newest: String)
}

/// A snapshot operation that failed: the errno the control file's `write()` returns and
/// one sentence for the user.
public struct SnapshotFailure: Error, Sendable {
    public let errno: Errno
    public let message: String

    public init(_ errno: Errno, _ message: String) {
        self.errno = errno
        self.message = message
    }
}

/// Takes, lists, prunes and deletes the snapshots of one mount.
///
/// A snapshot: push the kernel's dirty pages to the daemon, close the freeze gate (changes
/// in progress finish, new ones wait; readers go on), build the tree under
/// `.snapshots/.building-NAME` with the strategy, write its metadata, rename it to
/// `.snapshots/NAME`, open the gate. So it holds every change acknowledged before the
/// trigger and none after.
public final class SnapshotEngine: Sendable {
    public let strategy: SnapshotStrategy
    public let backingPath: String
    public let options: SnapshotOptions
    public let catalog: SnapshotCatalog
    let state: SnapshotState
    let logger: Logger
    /// The backing root, opened for reading (tree walks need a readable directory).
    let backingFD: Int32
    let links = Links()
    /// One snapshot, prune or delete at a time.
    let serial = Mutex<Void>(())
    /// The newest name given, so that names stay unique without listing `.snapshots`.
    let lastName = Mutex<SnapshotName?>(nil)
    /// Makes published snapshots durable in batches.
    let durability: SnapshotDurability
    /// What the start found of an earlier run (see ``logStartNotes()``).
    let startNotes: [String]

    final class Links: @unchecked Sendable {
        weak var fileSystem: SnapFileSystem?
        weak var kernel: (any KernelLink)?
    }

    /// The strategy a mount of `backingPath` will use: `forced`, checked against what the
    /// backing filesystem supports, or the best it supports. Leaves nothing behind, so it
    /// can run before the mount.
    public static func chooseStrategy(backingPath: String, forced: SnapshotStrategy?) throws(SnapshotFailure) -> SnapshotStrategy {
        let root = snapfs_openat(AT_FDCWD, backingPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard root >= 0 else { throw SnapshotFailure(Errno.current, "cannot open the backing directory \(backingPath)") }
        defer { close(root) }
        let best = StrategyProbe.best(for: root, scratch: root)
        guard let forced else { return best }
        switch forced {
        case .btrfs where best != .btrfs:
            throw SnapshotFailure(.notSupported, "--strategy btrfs needs a backing directory that is the root of a btrfs subvolume")
        case .reflink where best != .reflink && best != .btrfs:
            throw SnapshotFailure(.notSupported, "--strategy reflink needs a backing filesystem with reflinks (XFS, btrfs, bcachefs)")
        default:
            return forced
        }
    }

    /// Opens (creating if needed) `BACKING/.snapshots` and removes what a crash left
    /// half-built. `options.strategy` nil: chosen as ``chooseStrategy(backingPath:forced:)`` does.
    public init(backingPath: String, state: SnapshotState, options: SnapshotOptions,
                logger: Logger = Logger(label: "snapfs.snapshots")) throws(SnapshotFailure) {
        self.backingPath = backingPath
        self.state = state
        self.options = options
        self.logger = logger
        strategy = try Self.chooseStrategy(backingPath: backingPath, forced: options.strategy)
        let root = snapfs_openat(AT_FDCWD, backingPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard root >= 0 else { throw SnapshotFailure(Errno.current, "cannot open the backing directory \(backingPath)") }
        backingFD = root
        let durableThrough: SnapshotName?
        var notes: [String] = []
        do throws(SnapshotFailure) {
            catalog = try Self.openCatalog(in: root)
            try Self.cleanUpAfterCrash(catalog, logger: logger)
            durableThrough = try SnapshotDurability.recover(catalog, notes: &notes)
        } catch {
            close(root)
            throw error
        }
        durability = SnapshotDurability(syncFD: catalog.directoryFD, catalog: catalog, durable: durableThrough,
                                        delayMs: options.durableDelayMs, logger: logger)
        startNotes = notes
        let existing = (try? catalog.list()) ?? []
        let sharing = strategy == .hardlink || existing.contains { $0.metadata?.strategy == SnapshotStrategy.hardlink.rawValue }
        state.sharesObjects.store(sharing, ordering: .releasing)
    }

    deinit { close(backingFD) }

    /// Logs what the start found of an earlier run (snapshots removed as not durable, an
    /// old store): called once the daemon's log goes to its log file.
    public func logStartNotes() {
        for note in startNotes { logger.notice("\(note)") }
    }

    /// Connects the engine to the filesystem it snapshots and to the kernel.
    public func attach(to fileSystem: SnapFileSystem, kernel: (any KernelLink)?) {
        links.fileSystem = fileSystem
        links.kernel = kernel
        fileSystem.engineLink.engine = self
    }

    private static func openCatalog(in root: Int32) throws(SnapshotFailure) -> SnapshotCatalog {
        if mkdirat(root, ReservedName.snapshots, 0o755) != 0 && errno != EEXIST {
            throw SnapshotFailure(Errno.current, "cannot create \(ReservedName.snapshots) in the backing directory")
        }
        let fd = snapfs_openat(root, ReservedName.snapshots, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard fd >= 0 else {
            throw SnapshotFailure(Errno.current, "\(ReservedName.snapshots) in the backing directory is not a directory")
        }
        if mkdirat(fd, SnapshotCatalog.metadataDirectoryName, 0o755) != 0 && errno != EEXIST {
            let error = Errno.current
            close(fd)
            throw SnapshotFailure(error, "cannot create \(ReservedName.snapshots)/\(SnapshotCatalog.metadataDirectoryName)")
        }
        return SnapshotCatalog(directoryFD: fd)
    }

    /// Half-built snapshots of a crashed daemon are removed.
    private static func cleanUpAfterCrash(_ catalog: SnapshotCatalog, logger: Logger) throws(SnapshotFailure) {
        let leftovers: [String]
        do throws(Errno) { leftovers = try catalog.buildingLeftovers() } catch {
            throw SnapshotFailure(error, "cannot list \(ReservedName.snapshots)")
        }
        for name in leftovers {
            logger.notice("removing the half-built snapshot \(name) left by an earlier crash")
            do throws(Errno) {
                try TreeRemover.remove(parent: catalog.directoryFD, name: SnapshotCatalog.buildingPrefix + name)
            } catch {
                throw SnapshotFailure(error, "cannot remove the half-built snapshot \(name): \(error)")
            }
        }
        // Metadata is written just before its snapshot is renamed into place.
        let meta = snapfs_openat(catalog.directoryFD, SnapshotCatalog.metadataDirectoryName,
                                 SNAPFS_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard meta >= 0 else { return }
        defer { close(meta) }
        for file in (try? DirectoryNames.utf8Names(in: meta)) ?? [] where file.hasSuffix(".json") {
            var st = stat()
            if fstatat(catalog.directoryFD, String(file.dropLast(5)), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT {
                unlinkat(meta, file, 0)
            }
        }
    }

    // MARK: taking a snapshot

    /// Takes a snapshot of the whole tree now. Not while the freeze gate is held by the caller.
    ///
    /// `excluding`: an inode whose request the caller is serving (its kernel pages cannot
    /// be pushed from inside that request). `atCommit`: for a snapshot at a SQLite commit,
    /// runs with the gate closed and gives the commit's metadata, or nil when there is no
    /// committed state to take now (then no snapshot is made).
    public func take(label: String?, trigger: Trigger, force: Bool = false, excluding: UInt64? = nil,
                     atCommit: (() -> SQLiteCommitInfo?)? = nil) throws(SnapshotFailure) -> SnapshotOutcome {
        let outcome = try serial.withLock { (_: inout Void) throws(SnapshotFailure) -> SnapshotOutcome in
            // Dirty pages the kernel holds (mmap, write-back cache) come through the gate,
            // so they are pushed before it closes.
            if let kernel = links.kernel, let fileSystem = links.fileSystem {
                kernel.pushDirtyPages(of: fileSystem.inodes.openForWriting().filter { $0 != excluding })
            }
            return try state.gate.frozen { () throws(SnapshotFailure) -> SnapshotOutcome in
                let newest = try? catalog.newest()
                if options.skipUnchanged && !force && !state.changed, let newest {
                    return .unchanged(newest: newest.name.description)
                }
                var sqlite: SQLiteCommitInfo?
                if let atCommit {
                    guard let info = atCommit() else { return .unchanged(newest: newest?.name.description ?? "-") }
                    sqlite = info
                }
                // Everything written before the trigger is in the page cache or the backing
                // files now; the snapshot is of the backing files, so the cache goes first.
                do throws(CacheWriteBackFailure) { try links.fileSystem?.writeBackCache() } catch {
                    throw SnapshotFailure(error.errno, "no snapshot: \(error.message)")
                }
                let metadata = try build(label: label, trigger: trigger, after: newest?.name, sqlite: sqlite)
                state.changedSinceSnapshot.store(false, ordering: .relaxed)
                return .created(metadata)
            }
        }
        if case let .created(metadata) = outcome {
            logger.info("snapshot \(metadata.name): \(metadata.files) files, \(metadata.bytes) bytes, \(metadata.durationMs) ms")
            announce(metadata.name)
            if !options.retention.isEmpty {
                do throws(SnapshotFailure) { _ = try prune() } catch { logger.error("pruning after \(metadata.name) failed: \(error.message)") }
            }
        }
        return outcome
    }

    /// Makes every snapshot published so far durable now (one `syncfs`, then the marker):
    /// for snapshots asked for explicitly, and at unmount.
    public func makeDurable() throws(SnapshotFailure) {
        do throws(Errno) { try durability.sync() } catch {
            throw SnapshotFailure(error, "the snapshots could not be made durable: syncfs or the durability marker failed: \(error)")
        }
    }

    /// Writes everything written through the mount so far to the backing directory: the
    /// kernel's dirty pages to the daemon, then the page cache (for `snapfs unmount`).
    public func flush() throws(SnapshotFailure) {
        if let kernel = links.kernel, let fileSystem = links.fileSystem {
            kernel.pushDirtyPages(of: fileSystem.inodes.openForWriting())
        }
        do throws(CacheWriteBackFailure) { try links.fileSystem?.writeBackCache() } catch {
            throw SnapshotFailure(error.errno, error.message)
        }
    }

    /// Builds the snapshot; inside the frozen gate.
    private func build(label: String?, trigger: Trigger, after newest: SnapshotName?,
                       sqlite: SQLiteCommitInfo? = nil) throws(SnapshotFailure) -> SnapshotMetadata {
        let started = Self.monotonicMilliseconds()
        let name = try nextName(after: newest, label: label)
        let building = SnapshotCatalog.buildingPrefix + name.description
        let directory = catalog.directoryFD
        var statistics = CloneStatistics()
        do throws(Errno) {
            switch strategy {
            case .btrfs:
                try BtrfsSubvolume.snapshotTree(source: backingFD, into: directory, name: building,
                                                excludeAtTop: [ReservedName.snapshots])
            case .reflink, .hardlink, .copy:
                let method: CloneMethod = strategy == .reflink ? .reflink : strategy == .hardlink ? .hardlink : .copy
                // Inside the frozen gate: no passthrough starts or joins meanwhile.
                let copyInstead = method == .hardlink ? state.passthroughObjects.withLock { $0 } : []
                statistics = try TreeCloner(method: method, copyInstead: copyInstead).clone(source: backingFD, into: directory, name: building,
                                                                   excludeAtTop: [ReservedName.snapshots])
            }
        } catch {
            _ = try? TreeRemover.remove(parent: directory, name: building)
            throw SnapshotFailure(error, "the snapshot could not be built: \(error)")
        }
        if strategy == .hardlink {
            // Every regular file may now share its object with the snapshot.
            state.generation.wrappingAdd(1, ordering: .acquiringAndReleasing)
        }
        var metadata = SnapshotMetadata(name: name, trigger: trigger, strategy: strategy.rawValue,
                                        files: statistics.files + statistics.symlinks + statistics.specials,
                                        directories: statistics.directories, bytes: statistics.bytes, sqlite: sqlite)
        metadata.durationMs = ((Self.monotonicMilliseconds() - started) * 1000).rounded() / 1000
        try putInPlace(metadata, building: building, what: "the snapshot")
        return metadata
    }

    /// Writes the metadata and renames the finished `building` to the snapshot's name (the
    /// moment it appears); on failure removes what was built. Nothing is synced here: the
    /// durability thread makes it durable with the next batch.
    func putInPlace(_ metadata: SnapshotMetadata, building: String, what: String) throws(SnapshotFailure) {
        let directory = catalog.directoryFD
        do throws(Errno) {
            try catalog.writeMetadata(metadata, durable: false)
            try syscall(renameat(directory, building, directory, metadata.name))
        } catch {
            _ = try? TreeRemover.remove(parent: directory, name: building)
            throw SnapshotFailure(error, "\(what) could not be put in place: \(error)")
        }
        if let name = SnapshotName(parsing: metadata.name) { durability.published(name) }
    }

    /// The kernel may remember that a name did not exist in `.snapshots`.
    func announce(_ name: String) {
        guard let fileSystem = links.fileSystem, let kernel = links.kernel,
              let key = try? FileStatus.of(catalog.directoryFD),
              let id = fileSystem.inodes.id(of: BackingKey(key), snapshotView: true) else { return }
        kernel.invalidateEntry(parent: id, name: name)
    }

    // MARK: retention and removal

    /// Applies the retention rules; returns the names removed.
    public func prune(alreadySerial: Bool = false) throws(SnapshotFailure) -> [String] {
        let apply = { () throws(SnapshotFailure) -> [String] in
            let entries: [SnapshotEntry]
            do throws(Errno) { entries = try self.catalog.list() } catch { throw SnapshotFailure(error, "cannot list the snapshots") }
            let decision = self.options.retention.prune(entries.map { ($0.name.description, $0.name.timeMs, $0.held) })
            for name in decision.remove { try self.remove(name) }
            return decision.remove
        }
        if alreadySerial { return try apply() }
        return try serial.withLock { (_: inout Void) throws(SnapshotFailure) -> [String] in try apply() }
    }

    /// Deletes one snapshot (not a held one).
    public func delete(_ name: String) throws(SnapshotFailure) {
        try serial.withLock { (_: inout Void) throws(SnapshotFailure) in
            guard let entry = catalog.find(name) else { throw SnapshotFailure(.noSuchFileOrDirectory, "no snapshot named \(name)") }
            if entry.held { throw SnapshotFailure(.resourceBusy, "snapshot \(name) is held (snapfs release it first)") }
            try remove(name)
        }
    }

    /// Protects a snapshot from pruning and deletion, or stops protecting it.
    public func setHeld(_ held: Bool, _ name: String) throws(SnapshotFailure) {
        // A snapshot worth holding is worth having after a crash.
        if held, let parsed = SnapshotName(parsing: name), !durability.covers(parsed) { try makeDurable() }
        try serial.withLock { (_: inout Void) throws(SnapshotFailure) in
            guard catalog.find(name) != nil else { throw SnapshotFailure(.noSuchFileOrDirectory, "no snapshot named \(name)") }
            do throws(Errno) { _ = try catalog.setHeld(held, name: name) } catch {
                throw SnapshotFailure(error, "cannot update the metadata of \(name)")
            }
        }
    }

    private func remove(_ name: String) throws(SnapshotFailure) {
        do throws(Errno) {
            // Out of the list first, in one step: journals commit in order, so a crash
            // midway leaves a `.building-` leftover (removed at mount), never a listed
            // snapshot with part of its files gone.
            let hidden = SnapshotCatalog.buildingPrefix + name
            try syscall(renameat(catalog.directoryFD, name, catalog.directoryFD, hidden))
            try TreeRemover.remove(parent: catalog.directoryFD, name: hidden)
        } catch {
            throw SnapshotFailure(error, "cannot remove snapshot \(name): \(error)")
        }
        let metadataName = SnapshotCatalog.metadataDirectoryName + "/" + SnapshotMetadata.fileName(for: name)
        unlinkat(catalog.directoryFD, metadataName, 0)
        logger.info("removed snapshot \(name)")
        announce(name)
    }

    // MARK: status

    /// `key: value` lines for the control file and `snapfs status`.
    public func statusLines() -> [String] {
        let entries = (try? catalog.list()) ?? []
        var lines = [
            "backing: \(backingPath)",
            "strategy: \(strategy.rawValue)",
            "snapshots: \(entries.count)",
            "newest: \(entries.last?.name.description ?? "-")",
            "held: \(entries.filter(\.held).count)",
            "pending-durable: \(entries.filter { !durability.covers($0.name) }.count)",
            "changed: \(state.changed ? "yes" : "no")",
        ]
        if !options.retention.isEmpty { lines.append("retention: \(options.retention)") }
        if let interval = options.intervalMs { lines.append("every: \(interval / 1000)s") }
        return lines + (links.fileSystem.map { $0.sqlite.statusLines() + $0.cacheStatusLines() + $0.descriptorStatusLines() } ?? [])
    }

    // MARK: timer

    /// Starts the `--every` timer on a thread of its own.
    public func startTimer() {
        guard let interval = options.intervalMs, interval > 0 else { return }
        BackgroundThread.start { self.runTimer() }
    }

    private func runTimer() {
        let interval = options.intervalMs!
        while true {
            BackgroundThread.sleep(milliseconds: interval)
            do throws(SnapshotFailure) {
                _ = try take(label: nil, trigger: Trigger(kind: .timer, detail: "every \(interval / 1000)s"))
            } catch {
                logger.error("timed snapshot failed: \(error.message)")
            }
        }
    }

    static func wallClockMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// The monotonic clock in milliseconds, to the microsecond (for durations).
    static func monotonicMilliseconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) * 1000 + Double(now.tv_nsec) / 1_000_000
    }

    static func monotonicMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
