import CLinux
import Glibc
import Logging
import SnapFSBacking
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
    /// The free space snapshots always leave (``SpaceFloor``).
    public var minFree: SpaceFloor = .default
    /// How long a published snapshot may wait to be made durable, so that one `syncfs`
    /// covers many (milliseconds; see ``SnapshotDurability``).
    /// 5 s, ext4's own commit interval: a snapshot that retention removes sooner is never
    /// written out at all (`bench/sqlite_commits.py`, every-commit snapshots of a 100 MB
    /// WAL database with hard links: 15 tx/s with 1 s, 30 without batches).
    public var durableDelayMs: Int64 = 5000
    /// Build tree snapshots in the background with copy-before-write (``TreeCapture``),
    /// where the backing filesystem allows; false: inside the closed gate, as before.
    public var backgroundBuild = true
    /// Programs run before and after each snapshot (``SnapshotHooks``).
    public var hooks = SnapshotHooks()
    /// Paths left out of tree snapshots (`exclude=`; ``SnapshotExclusions``).
    public var exclusions = SnapshotExclusions.none

    public init() {}
}

/// What a snapshot request came to.
public enum SnapshotOutcome: Sendable, Equatable {
    case created(SnapshotMetadata)
    /// Nothing changed since the newest snapshot, so none was made.
    case unchanged(newest: String)
    /// Its moment is fixed and it is being built in the background (asked not to wait).
    case started(name: String)
}

/// A snapshot operation that failed: the errno the control file's `write()` returns and
/// one sentence for the user.
public struct SnapshotFailure: Error, Sendable {
    public let errno: Errno
    public let message: String
    /// Not taken, to keep the free space floor (counted and logged by the engine).
    public var skippedForSpace = false

    public init(_ errno: Errno, _ message: String, skippedForSpace: Bool = false) {
        self.errno = errno
        self.message = message
        self.skippedForSpace = skippedForSpace
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
    /// The snapshot ``delete(_:)`` is removing now, and its count of entries removed (for
    /// the `deleting:` status line).
    private let deletingNow = Mutex<(String, RemovalCount)?>(nil)
    /// The backing root, opened for reading (tree walks need a readable directory).
    let backingFD: Int32
    /// The live tree this engine snapshots, attached by the filesystem (held weakly).
    private let live = Mutex(WeakLiveTree())
    /// One snapshot, prune or delete at a time.
    let serial = Mutex<Void>(())
    /// The newest name given, so that names stay unique without listing `.snapshots`.
    let lastName = Mutex<SnapshotName?>(nil)
    /// Snapshots not taken to keep the free space floor, and whether the last one was.
    let skippedForSpace = Atomic<Int>(0)
    /// Snapshots a failing pre-snapshot hook skipped; post-snapshot hooks that failed.
    let hooksSkipped = Atomic<Int>(0)
    let postHookFailures = Atomic<Int>(0)
    let belowFloor = Atomic<Bool>(false)
    /// Snapshots made and failed since the mount, by trigger.
    public let counts = SnapshotCounts()
    /// Snapshots since the retention rules were last applied (see ``pruneIsDue()``).
    let sinceLastPrune = Atomic<Int>(0)
    /// Makes published snapshots durable in batches.
    let durability: SnapshotDurability
    /// Applies the commit bound off the commit's path (see ``pruneIfDue(after:alreadySerial:)``).
    let pruner: WakeableThread
    /// What the start found of an earlier run (see ``logStartNotes()``).
    let startNotes: [String]
    /// Whether tree snapshots are built in the background (``TreeCapture``).
    public let backgroundBuilds: Bool
    /// One background build at a time: a later tree trigger waits for it before its epoch.
    let buildSlot = BuildSlot()
    /// The background build in progress, for `status`.
    let buildingNow = Mutex<(name: String, capture: TreeCapture)?>(nil)
    /// Told of each snapshot published (see ``attach(follower:)``).
    let follower = Attachment<any SnapshotFollower>()

    private struct WeakLiveTree {
        weak var tree: (any LiveTree)?
    }

    /// The live tree, if still attached.
    var liveTree: (any LiveTree)? { live.withLock { $0.tree } }

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
            catalog = try Self.openCatalog(in: root, subvolume: strategy == .btrfs, logger: logger)
            try Self.cleanUpAfterCrash(catalog, logger: logger)
            durableThrough = try SnapshotDurability.recover(catalog, notes: &notes)
            if let note = try StoreMigration.run(catalog, logger: logger) { notes.append(note) }
        } catch {
            close(root)
            throw error
        }
        if let store = try? FileStatus.of(catalog.directoryFD) { state.store.withLock { $0 = BackingKey(store) } }
        durability = SnapshotDurability(syncFD: catalog.directoryFD, catalog: catalog, durable: durableThrough,
                                        delayMs: options.durableDelayMs, logger: logger)
        startNotes = notes
        backgroundBuilds = options.backgroundBuild && strategy != .btrfs && TreeCapture.supported(sourceRoot: root)
        pruner = WakeableThread()
        let existing = (try? catalog.list()) ?? []
        let sharing = strategy == .hardlink || existing.contains { $0.metadata?.strategy == SnapshotStrategy.hardlink.rawValue }
        state.sharesObjects.store(sharing, ordering: .releasing)
        pruner.attach { [weak self] in
            guard let self else { return }
            do throws(SnapshotFailure) { _ = try self.prune() } catch {
                self.logger.error("pruning by the commit bound failed: \(error.message)")
            }
        }
    }

    deinit { close(backingFD) }

    /// Logs what the start found of an earlier run (snapshots removed as not durable, an
    /// old store): called once the daemon's log goes to its log file.
    public func logStartNotes() {
        for note in startNotes { logger.notice("\(note)") }
    }

    /// Connects the engine to the live tree it snapshots (called by the tree's owner).
    public func attach(_ tree: any LiveTree) {
        live.withLock { $0.tree = tree }
    }

    /// Connects the part that follows the snapshots published (replication).
    public func attach(follower: any SnapshotFollower) {
        self.follower.attach(follower)
    }

    /// Opens `.snapshots`, creating it private: only the daemon's user (root) may reach the
    /// store in the backing directory, since there snapshots keep the modes they had live
    /// (a 1777 directory, a user's own files, an old setuid binary) outside the read-only
    /// mount. Users browse them through `MOUNT/.snapshots`, where every write is refused.
    /// A store made before, or changed by hand, is made private again here.
    ///
    /// `subvolume` (the `btrfs` strategy): a new store is a btrfs subvolume of its own, so
    /// that a snapshot of the backing subvolume holds it as one empty directory, whatever
    /// the number of snapshots kept in it (a plain directory would bring along every kept
    /// snapshot as an empty directory, and its metadata, which each new snapshot must shed).
    private static func openCatalog(in root: Int32, subvolume: Bool, logger: Logger) throws(SnapshotFailure) -> SnapshotCatalog {
        var made = false
        if subvolume {
            do throws(Errno) {
                try BtrfsSubvolume.create(in: root, name: ReservedName.snapshots)
                made = true
            } catch where error != .fileExists {
                logger.warning("cannot make \(ReservedName.snapshots) a btrfs subvolume (\(error)); a directory it is")
            } catch {}
        }
        if !made && mkdirat(root, ReservedName.snapshots, 0o700) != 0 && errno != EEXIST {
            throw SnapshotFailure(Errno.current, "cannot create \(ReservedName.snapshots) in the backing directory")
        }
        let fd = snapfs_openat(root, ReservedName.snapshots, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard fd >= 0 else {
            throw SnapshotFailure(Errno.current, "\(ReservedName.snapshots) in the backing directory is not a directory")
        }
        do throws(Errno) {
            try restrict(fd, mode: storeMode, logger: logger, what: ReservedName.snapshots)
            if mkdirat(fd, SnapshotCatalog.metadataDirectoryName, SnapshotCatalog.metadataDirectoryMode) != 0 && errno != EEXIST { throw .current }
            // Read through the mount by `snapfs list`, file by file (0711: no listing);
            // written only by the daemon.
            let meta = try syscall(snapfs_openat(fd, SnapshotCatalog.metadataDirectoryName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
            defer { close(meta) }
            try restrict(meta, mode: SnapshotCatalog.metadataDirectoryMode, logger: logger,
                         what: ReservedName.snapshots + "/" + SnapshotCatalog.metadataDirectoryName)
            Self.restrictMetadataFiles(in: meta)
        } catch {
            close(fd)
            throw SnapshotFailure(error, "cannot make \(ReservedName.snapshots) in the backing directory private: \(error)")
        }
        return SnapshotCatalog(directoryFD: fd)
    }

    /// Metadata that names paths becomes root's (a store made by an earlier version had all
    /// of it readable by everyone); the rest readable by all. In `.meta`, which only the
    /// daemon writes.
    static func restrictMetadataFiles(in meta: Int32) {
        for file in (try? DirectoryNames.utf8Names(in: meta)) ?? [] where file.hasSuffix(".json") && !file.hasPrefix(".") {
            guard let metadata = try? SnapshotMetadata.read(named: String(file.dropLast(5)), from: meta) else { continue }
            var st = stat()
            guard fstatat(meta, file, &st, AT_SYMLINK_NOFOLLOW) == 0, st.isRegular, st.st_mode & 0o777 != metadata.fileMode else { continue }
            fchmodat(meta, file, metadata.fileMode, 0)
        }
    }

    /// The mode of `BACKING/.snapshots`: the daemon's user (root) alone.
    public static let storeMode: mode_t = 0o700

    /// Gives the open directory `fd` to the daemon's user and group with exactly `mode` and
    /// no ACL, if it is not so already (a store made by an earlier version was 0755).
    private static func restrict(_ fd: Int32, mode: mode_t, logger: Logger, what: String) throws(Errno) {
        var st = stat()
        try syscall(fstat(fd, &st))
        let hadACL = fgetxattr(fd, "system.posix_acl_access", nil, 0) >= 0 || fgetxattr(fd, "system.posix_acl_default", nil, 0) >= 0
        guard st.st_uid != geteuid() || st.st_gid != getegid() || st.st_mode & 0o7777 != mode || hadACL else { return }
        logger.notice("making \(what) in the backing directory private to uid \(geteuid()) (mode \(String(mode, radix: 8)), was \(st.st_uid):\(st.st_gid) \(String(st.st_mode & 0o7777, radix: 8)))")
        // Mode first, so that no moment gives the new owner's group what the old mode gave.
        try syscall(fchmod(fd, mode))
        try ExtendedAttributes.removeInheritedACLs(fd)
        if st.st_uid != geteuid() || st.st_gid != getegid() { try syscall(fchown(fd, geteuid(), getegid())) }
        try syscall(fchmod(fd, mode))
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
                     atCommit: (() -> SQLiteCommitInfo?)? = nil, wait: Bool = true) throws(SnapshotFailure) -> SnapshotOutcome {
        // A build that goes on in the background runs the post-hook once it has ended.
        let published: @Sendable (SnapshotMetadata?) -> Void = { [self] built in
            runPostHook(trigger: trigger, label: label, result: built == nil ? "failed" : "created", snapshot: built?.name)
        }
        let take = { (hooked: Bool) throws(SnapshotFailure) -> SnapshotOutcome in
            try self.takeNow(label: label, trigger: trigger, force: force, excluding: excluding, atCommit: atCommit,
                             wait: wait, published: hooked ? published : nil)
        }
        let ended = { (outcome: SnapshotOutcome) -> (result: String, snapshot: String?)? in
            switch outcome {
            case .created(let metadata): return ("created", metadata.name)
            case .unchanged: return ("unchanged", nil)
            case .started: return nil
            }
        }
        return try withHooks(trigger, label: label, take, ended: ended)
    }

    /// Runs `body` between the pre- and post-snapshot hooks when snapshots with `trigger`
    /// run them (``SnapshotHooks/apply(to:)``), else `body` alone; `body` is told which.
    /// The post-hook is told `failed` when `body` throws, else what `ended` makes of its
    /// result, and is not run here when `ended` gives nil (`body` handed it on).
    func withHooks<T>(_ trigger: Trigger, label: String?, _ body: (_ hooked: Bool) throws(SnapshotFailure) -> T,
                      ended: (T) -> (result: String, snapshot: String?)?) throws(SnapshotFailure) -> T {
        guard options.hooks.apply(to: trigger) else { return try body(false) }
        try runPreHook(trigger: trigger, label: label)
        let value: T
        do throws(SnapshotFailure) { value = try body(true) } catch {
            runPostHook(trigger: trigger, label: label, result: "failed", snapshot: nil)
            throw error
        }
        if let end = ended(value) { runPostHook(trigger: trigger, label: label, result: end.result, snapshot: end.snapshot) }
        return value
    }

    /// Runs the pre-snapshot hook; a failure skips the snapshot (counted and logged), and the
    /// post-snapshot hook runs with the result `skipped`.
    func runPreHook(trigger: Trigger, label: String?) throws(SnapshotFailure) {
        guard let command = options.hooks.pre else { return }
        let run = options.hooks.run(command, stage: "pre", trigger: trigger, label: label, backing: backingPath)
        if let run, run.succeeded { return }
        hooksSkipped.wrappingAdd(1, ordering: .relaxed)
        let why = run?.summary ?? "could not be started"
        logger.warning("no snapshot (\(trigger.kind.rawValue)): the pre-snapshot hook \(why)")
        runPostHook(trigger: trigger, label: label, result: "skipped", snapshot: nil)
        throw SnapshotFailure(.canceled, "no snapshot: the pre-snapshot hook \(why)")
    }

    /// Runs the post-snapshot hook; a failure is logged and counted, and changes nothing.
    func runPostHook(trigger: Trigger, label: String?, result: String, snapshot: String?) {
        guard let command = options.hooks.post else { return }
        let run = options.hooks.run(command, stage: "post", trigger: trigger, label: label, backing: backingPath,
                                    result: result, snapshot: snapshot)
        if let run, run.succeeded { return }
        postHookFailures.wrappingAdd(1, ordering: .relaxed)
        logger.warning("the post-snapshot hook \(run?.summary ?? "could not be started") (\(snapshot ?? result))")
    }

    /// ``take(label:trigger:force:excluding:atCommit:wait:)`` without the hooks, counting
    /// failures; `published` is told the end of a build that goes on in the background (nil:
    /// it failed).
    private func takeNow(label: String?, trigger: Trigger, force: Bool, excluding: UInt64?,
                         atCommit: (() -> SQLiteCommitInfo?)?, wait: Bool,
                         published: (@Sendable (SnapshotMetadata?) -> Void)? = nil) throws(SnapshotFailure) -> SnapshotOutcome {
        // Made: counted where each is published (``logCreated(_:)``), also in the background.
        do throws(SnapshotFailure) {
            return try takeTree(label: label, trigger: trigger, force: force, excluding: excluding, atCommit: atCommit, wait: wait,
                                published: published)
        } catch {
            counts.countFailed(trigger.kind, error)
            // Whoever asked is told too; the log is where an operator looks afterwards.
            // (Skipped for space: logged where the floor is checked.)
            if !error.skippedForSpace { logger.error("snapshot (\(trigger.kind.rawValue)) failed: \(error.message)") }
            throw error
        }
    }

    private func takeTree(label: String?, trigger: Trigger, force: Bool, excluding: UInt64?,
                          atCommit: (() -> SQLiteCommitInfo?)?, wait: Bool,
                          published: (@Sendable (SnapshotMetadata?) -> Void)?) throws(SnapshotFailure) -> SnapshotOutcome {
        // A tree snapshot waits for the one being built (its epoch comes after that one's end).
        let background = atCommit == nil && backgroundBuilds
        if background { buildSlot.acquire() }
        var holdsSlot = background
        defer { if holdsSlot { buildSlot.release() } }
        let taken = try serial.withLock { (_: inout Void) throws(SnapshotFailure) -> Taken in
            // Dirty pages the kernel holds (mmap, write-back cache) come through the gate,
            // so they are pushed before it closes.
            let tree = liveTree
            tree?.pushKernelDirtyPages(excluding: excluding)
            // A background build does what waits for the disk and fixes nothing before the
            // gate: reads the newest snapshot, names the new one, makes its empty top.
            var prepared: (newest: SnapshotEntry?, name: SnapshotName)?
            if background {
                let newest = try? catalog.newest()
                if options.skipUnchanged && !force && !state.changed, let newest {
                    return .done(.unchanged(newest: newest.name.description))
                }
                let name = try nextName(after: newest?.name, label: label)
                do throws(Errno) {
                    try TreeCapture.prepare(store: catalog.directoryFD, building: SnapshotCatalog.buildingPrefix + name.description)
                } catch {
                    throw SnapshotFailure(error, "the snapshot could not be started: \(error)")
                }
                prepared = (newest, name)
            }
            var frozen: Frozen
            let closing = Self.monotonicMilliseconds()
            do throws(SnapshotFailure) { frozen = try state.gate.frozen { () throws(SnapshotFailure) -> Frozen in
                let newest = prepared.map(\.newest) ?? (try? catalog.newest())
                if options.skipUnchanged && !force && !state.changed, let newest {
                    return .unchanged(newest.name.description)
                }
                var sqlite: SQLiteCommitInfo?
                if let atCommit {
                    guard let info = atCommit() else { return .unchanged(newest?.name.description ?? "-") }
                    sqlite = info
                }
                // Everything written before the trigger is in the page cache or the backing
                // files now; the snapshot is of the backing files, so the cache goes first.
                do throws(SnapshotFailure) { try tree?.writeBack() } catch {
                    throw SnapshotFailure(error.errno, "no snapshot: \(error.message)")
                }
                try makeRoom(bytes: strategy == .copy ? newest?.metadata?.bytes ?? 0 : 0,
                             inodes: Self.inodeEstimate(strategy, newest?.metadata), database: sqlite?.database)
                if let prepared {
                    let started = try startCapture(prepared.name, trigger: trigger, expectedObjects: newest?.metadata?.files ?? 0)
                    state.changedSinceSnapshot.store(false, ordering: .relaxed)
                    return .capturing(started)
                }
                let built = try build(label: label, trigger: trigger, after: newest?.name, sqlite: sqlite)
                state.changedSinceSnapshot.store(false, ordering: .relaxed)
                return .built(built)
            } } catch {
                if let prepared { TreeCapture.unprepare(store: catalog.directoryFD, building: SnapshotCatalog.buildingPrefix + prepared.name.description) }
                throw error
            }
            // How long the writers were held: the gate's closing (in-flight changes draining)
            // and what was done inside it.
            frozen.setGateMs(Self.monotonicMilliseconds() - closing)
            if case .unchanged = frozen, let prepared {
                TreeCapture.unprepare(store: catalog.directoryFD, building: SnapshotCatalog.buildingPrefix + prepared.name.description)
            }
            switch frozen {
            case .unchanged(let newest): return .done(.unchanged(newest: newest))
            case .capturing(let started): return .capturing(started)
            // The snapshot's content is fixed: the rest goes on with the writers let through.
            case .built(let built):
                do throws(SnapshotFailure) { return .done(.created(try publish(built))) } catch {
                    state.changedSinceSnapshot.store(true, ordering: .relaxed)  // nothing was taken
                    throw error
                }
            }
        }
        let outcome: SnapshotOutcome
        switch taken {
        case .done(let done): outcome = done
        case .capturing(let started) where wait:
            outcome = .created(try completeCapture(started))
        case .capturing(let started):
            holdsSlot = false
            BackgroundThread.start { [self] in
                defer { buildSlot.release() }
                do throws(SnapshotFailure) {
                    let metadata = try completeCapture(started)
                    logCreated(metadata)
                    published?(metadata)
                } catch {
                    counts.countFailed(trigger.kind, error)
                    logger.error("snapshot \(started.built.metadata.name) failed: \(error.message)")
                    published?(nil)
                }
            }
            return .started(name: started.built.metadata.name)
        }
        if case let .created(metadata) = outcome { logCreated(metadata) }
        return outcome
    }

    private func logCreated(_ metadata: SnapshotMetadata) {
        counts.countMade(metadata.trigger.kind)
        logger.info("snapshot \(metadata.name): \(metadata.files) files, \(metadata.bytes) bytes, \(metadata.durationMs) ms")
        announce(metadata.name)
        pruneIfDue(after: metadata.name)
    }

    /// What the serial part of a snapshot gave.
    private enum Taken {
        case done(SnapshotOutcome)
        case capturing(Capturing)
    }

    /// A tree snapshot whose moment is fixed, being built in the background.
    private struct Capturing: @unchecked Sendable {
        let capture: TreeCapture
        var built: Built
    }

    /// The epoch of a background build named `name`, whose top is prepared: installs the
    /// capture; inside the frozen gate.
    private func startCapture(_ name: SnapshotName, trigger: Trigger, expectedObjects: Int) throws(SnapshotFailure) -> Capturing {
        let started = Self.monotonicMilliseconds()
        let building = SnapshotCatalog.buildingPrefix + name.description
        let method = strategy.cloneMethod ?? .copy
        let capture: TreeCapture
        do throws(Errno) {
            // Inside the frozen gate: no passthrough starts or joins meanwhile.
            let copyInstead = method == .hardlink ? state.passthroughObjects.withLock { $0 } : []
            // Large files being written are copied by chunks, so their writers never wait
            // for a whole copy (a copy-up after hard links, a stash with copies).
            let ranged = method == .reflink ? [] : liveTree?.filesOpenForWriting(atLeast: RangedCopy.threshold) ?? []
            capture = try TreeCapture(method: method, copyInstead: copyInstead, sourceRoot: backingFD,
                                      store: catalog.directoryFD, building: building, excludeAtTop: [ReservedName.snapshots],
                                      exclusions: options.exclusions, expectedObjects: expectedObjects, ranged: ranged)
        } catch {
            throw SnapshotFailure(error, "the snapshot could not be started: \(error)")
        }
        state.install(capture)
        buildingNow.withLock { $0 = (name.description, capture) }
        if strategy == .hardlink {
            // Every regular file may now share its object with the snapshot.
            state.generation.wrappingAdd(1, ordering: .acquiringAndReleasing)
        }
        let metadata = SnapshotMetadata(name: name, trigger: trigger, strategy: strategy.rawValue,
                                        files: 0, directories: 0, bytes: 0, sqlite: nil)
        return Capturing(capture: capture, built: Built(metadata: metadata, building: building, started: started))
    }

    /// Walks the tree of a started background build to its end, then publishes it.
    private func completeCapture(_ started: Capturing) throws(SnapshotFailure) -> SnapshotMetadata {
        var built = started.built
        let statistics: CloneStatistics
        do throws(Errno) {
            defer {
                state.install(nil)
                buildingNow.withLock { $0 = nil }
            }
            try started.capture.walk()
            statistics = try started.capture.finish()
        } catch {
            started.capture.discard()
            state.changedSinceSnapshot.store(true, ordering: .relaxed)  // nothing was taken
            throw SnapshotFailure(error, "the snapshot could not be built: \(error)")
        }
        built.metadata.files = statistics.files + statistics.symlinks + statistics.specials
        built.metadata.directories = statistics.directories
        built.metadata.bytes = statistics.bytes
        let builtMs = Self.monotonicMilliseconds() - built.started
        logger.info("snapshot \(built.metadata.name): gate held \(built.metadata.gateMs ?? 0) ms at its epoch, tree built in \(Self.rounded(builtMs)) ms")
        do throws(SnapshotFailure) { return try publish(built, serialHeld: false) } catch {
            state.changedSinceSnapshot.store(true, ordering: .relaxed)
            throw error
        }
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
        let tree = liveTree
        tree?.pushKernelDirtyPages(excluding: nil)
        try tree?.writeBack()
    }

    /// What the frozen gate gave: no snapshot needed, or one built and not yet published.
    private enum Frozen {
        case unchanged(String)
        case built(Built)
        case capturing(Capturing)

        mutating func setGateMs(_ ms: Double) {
            let rounded = SnapshotEngine.rounded(ms)
            switch self {
            case .unchanged: break
            case .built(var built): built.metadata.gateMs = rounded; self = .built(built)
            case .capturing(var capturing): capturing.built.metadata.gateMs = rounded; self = .capturing(capturing)
            }
        }
    }

    /// A snapshot whose content is fixed, under its building name.
    private struct Built {
        var metadata: SnapshotMetadata
        let building: String
        let started: Double
    }

    /// Builds the snapshot; inside the frozen gate.
    private func build(label: String?, trigger: Trigger, after newest: SnapshotName?,
                       sqlite: SQLiteCommitInfo? = nil) throws(SnapshotFailure) -> Built {
        let started = Self.monotonicMilliseconds()
        let name = try nextName(after: newest, label: label)
        let building = SnapshotCatalog.buildingPrefix + name.description
        let directory = catalog.directoryFD
        var statistics = CloneStatistics()
        do throws(Errno) {
            switch strategy {
            case .btrfs:
                // Finished (companions, read-only) by `publish`, outside the gate.
                try BtrfsSubvolume.takeTree(source: backingFD, into: directory, name: building,
                                            excludeAtTop: [ReservedName.snapshots])
            case .reflink, .hardlink, .copy:
                let method: CloneMethod = strategy == .reflink ? .reflink : strategy == .hardlink ? .hardlink : .copy
                // Inside the frozen gate: no passthrough starts or joins meanwhile.
                let copyInstead = method == .hardlink ? state.passthroughObjects.withLock { $0 } : []
                statistics = try TreeCloner(method: method, copyInstead: copyInstead, exclusions: options.exclusions).clone(source: backingFD, into: directory, name: building,
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
        let metadata = SnapshotMetadata(name: name, trigger: trigger, strategy: strategy.rawValue,
                                        files: statistics.files + statistics.symlinks + statistics.specials,
                                        directories: statistics.directories, bytes: statistics.bytes, sqlite: sqlite)
        return Built(metadata: metadata, building: building, started: started)
    }

    /// Finishes a built snapshot and publishes it; after the gate (still serial). A btrfs
    /// snapshot gets the companions of its WAL databases, from a walk that reads the first
    /// bytes of every file whose size could be a database's (``SQLiteCompanion``), and is
    /// made read-only. The other strategies found and finished their databases as their
    /// walk placed each file, and sealed them with their directories.
    private func publish(_ built: Built, serialHeld: Bool = true) throws(SnapshotFailure) -> SnapshotMetadata {
        var metadata = built.metadata
        if strategy == .btrfs {
            do throws(Errno) { try BtrfsSubvolume.finishTree(in: catalog.directoryFD, name: built.building,
                                                                         exclusions: options.exclusions) } catch {
                _ = try? TreeRemover.remove(parent: catalog.directoryFD, name: built.building)
                throw SnapshotFailure(error, "the snapshot could not be built: \(error)")
            }
        }
        metadata.durationMs = Self.rounded(Self.monotonicMilliseconds() - built.started)
        if serialHeld {
            try putInPlace(metadata, building: built.building, what: "the snapshot")
        } else {
            try serial.withLock { (_: inout Void) throws(SnapshotFailure) in
                try putInPlace(metadata, building: built.building, what: "the snapshot")
            }
        }
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
            if strategy != .btrfs {
                // A btrfs snapshot is a read-only subvolume already.
                let top = snapfs_openat(directory, metadata.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
                if top < 0 || (try? Seal.apply(top)) == nil { logger.warning("could not seal snapshot \(metadata.name): \(Errno.current)") }
                if top >= 0 { close(top) }
            }
        } catch {
            _ = try? TreeRemover.remove(parent: directory, name: building)
            throw SnapshotFailure(error, "\(what) could not be put in place: \(error)")
        }
        if let name = SnapshotName(parsing: metadata.name) { durability.published(name) }
        follower.value?.snapshotPublished(metadata)
    }

    /// The kernel may remember that a name did not exist in `.snapshots`.
    func announce(_ name: String) {
        guard let tree = liveTree, let key = try? FileStatus.of(catalog.directoryFD) else { return }
        tree.snapshotAppeared(name, inStore: BackingKey(key))
    }

    // MARK: retention and removal

    /// Applies the retention rules; returns the names removed. The snapshots go out of the
    /// list under the serial lock (a rename each); their trees are removed after it, so
    /// that the next snapshot does not wait for the removal.
    public func prune(alreadySerial: Bool = false) throws(SnapshotFailure) -> [String] {
        let apply = { () throws(SnapshotFailure) -> [(name: String, hidden: String)] in
            let entries: [SnapshotEntry]
            do throws(Errno) { entries = try self.catalog.list() } catch { throw SnapshotFailure(error, "cannot list the snapshots") }
            let decision = self.options.retention.prune(grouped: self.retentionInput(entries))
            var hidden: [(name: String, hidden: String)] = []
            for name in decision.remove {
                do throws(Errno) { hidden.append((name, try self.catalog.hide(name))) } catch {
                    throw SnapshotFailure(error, "cannot remove snapshot \(name): \(error)")
                }
            }
            return hidden
        }
        let hidden = alreadySerial ? try apply() : try serial.withLock { (_: inout Void) throws(SnapshotFailure) in try apply() }
        for (name, building) in hidden { try removeHidden(name, building) }
        return hidden.map(\.name)
    }

    /// After a snapshot: the retention rules, when they are due. The commit bound alone
    /// (the default) is applied on a thread of its own, so that a commit never waits for
    /// old snapshots to be removed; other rules at once, as the user set them.
    func pruneIfDue(after name: String, alreadySerial: Bool = false) {
        guard pruneIsDue() else { return }
        if !options.retention.hasGeneralRule && !alreadySerial {
            pruner.wake()
            return
        }
        do throws(SnapshotFailure) { _ = try prune(alreadySerial: alreadySerial) } catch {
            logger.error("pruning after \(name) failed: \(error.message)")
        }
    }

    /// What the retention rules weigh of each snapshot: name, time, held, and the database
    /// of a commit snapshot. A snapshot not yet replicated counts as held: retention never
    /// removes it (``SnapshotFollower/mustKeep(_:)``).
    func retentionInput(_ entries: [SnapshotEntry]) -> [(name: String, timeMs: Int64, held: Bool, database: String?)] {
        let unsent = follower.value?.mustKeep(entries) ?? []
        return entries.map { entry in
            let name = entry.name.description
            return (name, entry.name.timeMs, entry.held || unsent.contains(name), entry.metadata?.sqlite?.database)
        }
    }

    /// Whether to apply the retention rules after a snapshot: after each one, except when
    /// the commit bound is the only rule (the mount's default), which is applied after every
    /// tenth of it, so that a commit does not read the whole catalog each time. The bound is
    /// then `keepCommits` plus at most a tenth.
    func pruneIsDue() -> Bool {
        let retention = options.retention
        if retention.isEmpty { return false }
        if retention.hasGeneralRule { return true }
        let every = max(1, (retention.keepCommits ?? 0) / 10)
        if sinceLastPrune.wrappingAdd(1, ordering: .relaxed).newValue < every { return false }
        sinceLastPrune.store(0, ordering: .relaxed)
        return true
    }

    /// Inodes a tree snapshot of the size of `newest` takes: its directories, and its files
    /// unless they are hard links; none for a btrfs snapshot.
    static func inodeEstimate(_ strategy: SnapshotStrategy, _ newest: SnapshotMetadata?) -> Int64 {
        guard let newest, strategy != .btrfs else { return 0 }
        return Int64(newest.directories) + (strategy == .hardlink ? 0 : Int64(newest.files))
    }

    /// Makes sure a snapshot of about `bytes` and `inodes` leaves the free space floor
    /// (``SnapshotOptions/minFree``): if not, first removes what the retention rules would
    /// remove once the new snapshot (of `database`, at a commit) exists; if that is not
    /// enough, throws a failure marked ``SnapshotFailure/skippedForSpace`` (ENOSPC), counts
    /// it, and logs the first of a run of them. Held by `serial`.
    func makeRoom(bytes: Int64, inodes: Int64, database: String?) throws(SnapshotFailure) {
        let floor = options.minFree
        guard var shortfall = floor.shortfall(on: backingFD, adding: bytes, inodes: inodes) else {
            if belowFloor.exchange(false, ordering: .relaxed) { logger.notice("free space is above min_free=\(floor) again: snapshots resume") }
            return
        }
        // Snapshots not yet replicated, which retention keeps: new snapshots are skipped first.
        var unsent = 0
        if !options.retention.isEmpty, let entries = try? catalog.list() {
            let pending = "~pending"   // after every snapshot name, as the new one will be
            var input = retentionInput(entries)
            unsent = input.filter(\.held).count - entries.filter(\.held).count
            input.append((pending, Self.wallClockMs(), false, database))
            for name in options.retention.prune(grouped: input).remove where name != pending {
                do throws(SnapshotFailure) { try remove(name) } catch { logger.error("\(error.message)") }
            }
            guard let left = floor.shortfall(on: backingFD, adding: bytes, inodes: inodes) else {
                if belowFloor.exchange(false, ordering: .relaxed) { logger.notice("free space is above min_free=\(floor) again: snapshots resume") }
                return
            }
            shortfall = left
        }
        skippedForSpace.wrappingAdd(1, ordering: .relaxed)
        if !belowFloor.exchange(true, ordering: .relaxed) {
            let kept = unsent > 0 ? "; \(unsent) snapshots not yet replicated are kept, not removed" : ""
            logger.warning("snapshots are skipped while free space stays below the floor: \(shortfall) (counted as skipped-for-space in status)\(kept)")
        }
        throw SnapshotFailure(.noSpace, "no snapshot: \(shortfall)", skippedForSpace: true)
    }

    /// Deletes one snapshot (not a held one).
    public func delete(_ name: String) throws(SnapshotFailure) {
        try serial.withLock { (_: inout Void) throws(SnapshotFailure) in
            guard let entry = catalog.find(name) else { throw SnapshotFailure(.noSuchFileOrDirectory, "no snapshot named \(name)") }
            if entry.held { throw SnapshotFailure(.resourceBusy, "snapshot \(name) is held (snapfs release it first)") }
            let count = RemovalCount()
            deletingNow.withLock { $0 = (name, count) }
            defer { deletingNow.withLock { $0 = nil } }
            try remove(name, count: count)
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

    private func remove(_ name: String, count: RemovalCount? = nil) throws(SnapshotFailure) {
        // Out of the list first, in one step: journals commit in order, so a crash midway
        // leaves a `.building-` leftover (removed at mount), never a listed snapshot with
        // part of its files gone.
        let hidden: String
        do throws(Errno) { hidden = try catalog.hide(name) } catch {
            throw SnapshotFailure(error, "cannot remove snapshot \(name): \(error)")
        }
        try removeHidden(name, hidden, count: count)
    }

    /// Removes the tree of snapshot `name`, already renamed to `hidden`, and its metadata.
    private func removeHidden(_ name: String, _ hidden: String, count: RemovalCount? = nil) throws(SnapshotFailure) {
        do throws(Errno) {
            try TreeRemover.remove(parent: catalog.directoryFD, name: hidden, count: count)
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
        lines.append("min-free: \(options.minFree)")
        if !options.exclusions.isEmpty { lines.append("exclude: \(options.exclusions)") }
        lines.append("skipped-for-space: \(skippedForSpace.load(ordering: .relaxed))")
        if !options.hooks.isEmpty {
            lines.append("hooks: pre=\(options.hooks.pre == nil ? "no" : "yes") post=\(options.hooks.post == nil ? "no" : "yes") timeout=\(options.hooks.timeoutMs)ms on-commits=\(options.hooks.onCommits ? "yes" : "no")")
            lines.append("hooks-skipped: \(hooksSkipped.load(ordering: .relaxed))")
            lines.append("hooks-post-failed: \(postHookFailures.load(ordering: .relaxed))")
        }
        if let (free, floor) = options.minFree.freeAndFloor(on: backingFD) {
            lines.append("free-bytes: \(free)")
            lines.append("min-free-bytes: \(floor)")
        }
        lines += counts.statusLines()
        if let interval = options.intervalMs { lines.append("every: \(interval / 1000)s") }
        lines.append("build: \(backgroundBuilds ? "background" : "frozen")")
        if let (name, capture) = buildingNow.withLock({ $0 }) {
            let progress = capture.progress
            lines.append("building: \(name) (\(progress.captured) directories done, \(progress.waiting) found and waiting)")
        }
        if let (name, count) = deletingNow.withLock({ $0 }) {
            lines.append("deleting: \(name) (\(count.value) entries removed)")
        }
        lines += follower.value?.statusLines(entries) ?? []
        return lines + (liveTree?.statusLines() ?? [])
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
            // A failure is counted and logged by ``takeNow``.
            _ = try? take(label: nil, trigger: Trigger(kind: .timer, detail: "every \(interval / 1000)s"))
        }
    }

    /// Milliseconds to the microsecond, for the log.
    static func rounded(_ ms: Double) -> Double { (ms * 1000).rounded() / 1000 }

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

    static func monotonicMs() -> Int64 { MonotonicClock.microseconds() / 1000 }

    package static func monotonicUs() -> Int64 { MonotonicClock.microseconds() }
}
