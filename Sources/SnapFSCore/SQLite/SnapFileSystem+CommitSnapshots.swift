import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SnapFSSnapshots
import SystemPackage

/// The snapshot of a SQLite commit: checks that the file is a database, applies the policy
/// (`SnapFSSQLite`'s ``SQLiteCommitDetector``), and has the engine take it, at the commit or,
/// when the interval defers it, on the thread that takes the commits whose interval ran out.
extension SnapFileSystem {
    // MARK: the commit

    /// A commit happened: checks that the file is a database, applies the policy, and
    /// takes the snapshot. `serving`: the inode whose request is being served (its kernel
    /// pages must not be pushed from inside that request). Never throws: the commit itself
    /// has happened; a snapshot that fails is logged and counted.
    ///
    /// What the snapshot costs the request, from the decision on, is noted for the policy
    /// (``SQLiteOptions/MinInterval/auto``), and so is a copy-up that the transaction paid
    /// because of the previous snapshot.
    func sqliteCommitted(_ commit: SQLiteCommit, serving: UInt64?) {
        do throws(Errno) {
            pushKernelPagesOfDatabase(commit, serving: serving)
            if commit.mode == .wal {
                // The database file does not change at a WAL commit: it is opened only to be snapshotted.
                guard let path = try walDatabasePath(commit) else { return }
                let decided = SnapshotEngine.monotonicUs()
                let decision = sqlite.policy.decide(commit, path: path, fingerprint: nil, nowUs: decided)
                guard decision == .snapshot, let engine else { return }
                guard makeWALDatabaseCurrent(commit, serving: serving) else {
                    sqlite.policy.handToIntervalThread(commit, path: path, nowUs: decided)
                    return
                }
                defer { sqlite.policy.noteCost(SnapshotEngine.monotonicUs() - decided, of: path) }
                guard let database = try openDatabase(commit) else { return }
                do throws(Errno) {
                    try snapshot(commit, of: database, engine: engine, serving: serving, quiet: false)
                } catch .resourceTemporarilyUnavailable {
                    // The log moved on while its frames were read (written back from the
                    // kernel's cache, it is not held by the application's write): the
                    // interval thread takes the newest state instead.
                    sqlite.policy.notYet(commit, path: path, nowUs: SnapshotEngine.monotonicUs())
                }
                return
            }
            guard let database = try openDatabase(commit) else { return }
            let st = database.status
            let fingerprint = [Int64(database.header.changeCounter), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec), Int64(st.st_size)]
            noteCopyUpCost(of: database)
            let decided = SnapshotEngine.monotonicUs()
            let decision = sqlite.policy.decide(commit, path: database.path, fingerprint: fingerprint, nowUs: decided)
            guard decision == .snapshot, let engine else { return }
            defer { sqlite.policy.noteCost(SnapshotEngine.monotonicUs() - decided, of: database.path) }
            try snapshot(commit, of: database, engine: engine, serving: serving, quiet: false)
        } catch {
            sqlite.failures.add(1, ordering: .relaxed)
            logger.error("snapshot at a SQLite commit failed: \(error)")
        }
    }

    /// With hard links, the transaction just committed may have paid for the previous
    /// snapshot: its first write copied the database up. That time is part of what the
    /// snapshot cost the application.
    private func noteCopyUpCost(of database: OpenDatabase) {
        guard case .auto = sqlite.options.minInterval, snapshotState.sharesBackingObjects,
              let node = liveInode(of: BackingKey(database.status)) else { return }
        let us = node.copyUp.costUs.exchange(0, ordering: .relaxed)
        if us > 0 { sqlite.policy.noteCost(us, of: database.path) }
    }

    /// Before the first snapshot of a log generation: makes the database file current (its
    /// pages in the kernel's cache handed over, see ``WALLogs/databaseIsCurrent(ofLog:generation:)``).
    /// False when that cannot be done inside the request serving the log: a log the kernel
    /// caches, whose database's writes pull the log's pages first (they would wait for the
    /// very page this request is writing); the interval thread does it then.
    private func makeWALDatabaseCurrent(_ commit: SQLiteCommit, serving: UInt64?) -> Bool {
        guard let key = commit.walKey, let header = commit.walLog?.header,
              !walDatabaseIsCurrent(ofLog: key, header: header) else { return true }
        if logsInKernelCache { return false }
        pushKernelPages(ofFile: commit.location.name, in: commit.location.directoryInode, serving: serving)
        sqlite.logs.noteDatabaseCurrent(ofLog: key, generation: WALLogs.generation(of: header))
        return true
    }

    /// Whether the database of the log `key` holds what the log's generation (`header`)
    /// started from: always, unless the kernel caches pages and commits snapshot one
    /// database; then once it was made current for that generation.
    private func walDatabaseIsCurrent(ofLog key: BackingKey, header: WALHeader) -> Bool {
        !options.kernelWritebackCache || sqlite.options.scope != .database
            || sqlite.logs.databaseIsCurrent(ofLog: key, generation: WALLogs.generation(of: header))
    }

    /// On the interval thread, before a WAL commit's database is snapshotted: the log's
    /// pages the kernel caches, then the database's, so the newest committed state snapfs
    /// knows is the newest the application made, and the file holds what the log's
    /// generation started from.
    private func pullWALDatabase(_ commit: SQLiteCommit) {
        guard options.kernelWritebackCache, commit.mode == .wal, let key = commit.walKey, let kernel = kernel.value else { return }
        if logsInKernelCache, let log = inodes.id(of: key, snapshotView: false) { kernel.pushDirtyPages(of: [log]) }
        let header = sqlite.logs.walLog(key)?.header
        pushKernelPages(ofFile: commit.location.name, in: commit.location.directoryInode, serving: nil)
        if let header { sqlite.logs.noteDatabaseCurrent(ofLog: key, generation: WALLogs.generation(of: header)) }
    }

    /// The kernel's dirty pages of the regular file `name` in `dir`, handed over (unless it
    /// is the inode whose request the caller serves).
    private func pushKernelPages(ofFile name: [UInt8], in dir: Inode, serving: UInt64?) {
        guard let kernel = kernel.value else { return }
        let key = try? regularFileKey(name, in: dir)
        guard let key = key ?? nil, let id = inodes.id(of: key, snapshotView: false), id != serving else { return }
        kernel.pushDirtyPages(of: [id])
    }

    /// The backing object of the regular file `name` in `dir` (one fstatat, not following a
    /// symlink); nil if there is none.
    func regularFileKey(_ name: [UInt8], in dir: Inode) throws(Errno) -> BackingKey? {
        try dir.withFD { (dirFD) throws(Errno) -> BackingKey? in
            var st = stat()
            let found = name.withCString { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
            return found && st.isRegular ? BackingKey(st) : nil
        }
    }

    /// The path of a WAL commit's database, if it is one: when the name still leads to the
    /// object the log's last commit found to be its database (one fstatat), its path;
    /// else what opening it finds.
    private func walDatabasePath(_ commit: SQLiteCommit) throws(Errno) -> String? {
        guard let walKey = commit.walKey else { return try openDatabase(commit)?.path }
        let location = commit.location
        guard let current = try regularFileKey(location.name, in: location.directoryInode) else { return nil }
        if sqlite.logs.isKnownDatabase(current, ofLog: walKey, at: location) {
            return try location.directoryInode.withFD { (dirFD) throws(Errno) in relativePath(of: location.directoryInode, dirFD, name: location.name) }
        }
        guard let database = try openDatabase(commit) else { return nil }
        sqlite.logs.noteDatabase(.init(location: location, key: BackingKey(database.status)), ofLog: walKey)
        return database.path
    }

    /// The database of `commit`, open, if it is one (a regular file with a valid header).
    private func openDatabase(_ commit: SQLiteCommit) throws(Errno) -> OpenDatabase? {
        try commit.location.directoryInode.withFD { (dirFD) throws(Errno) -> OpenDatabase? in
            // No such file (or a symlink, a FIFO…): a journal without a database, not a commit.
            let fd = Self.openForReading(commit.location.name, in: dirFD)
            guard fd >= 0 else { return nil }
            let walFD = commit.mode == .wal ? Self.openForReading(commit.location.name + Array("-wal".utf8), in: dirFD) : -1
            let database = OpenDatabase(fd: fd, walFD: walFD)
            try writeBackCachedDatabase(fd)
            var bytes = [UInt8](repeating: 0, count: SQLiteFormat.databaseHeaderSize)
            let n = bytes.withUnsafeMutableBytes { DescriptorReader(fd: fd).read(into: $0, at: 0) }
            guard fstat(fd, &database.status) == 0, database.status.isRegular, n == bytes.count,
                  let header = SQLiteDatabaseHeader(bytes), commit.walLog == nil || walFD >= 0 else { return nil }
            database.header = header
            database.path = relativePath(of: commit.location.directoryInode, dirFD, name: commit.location.name)
            return database
        }
    }

    private func snapshot(_ commit: SQLiteCommit, of database: OpenDatabase, engine: SnapshotEngine,
                          serving: UInt64?, quiet: Bool) throws(Errno) {
        let header: SQLiteDatabaseHeader = database.header
        let info = commitInfo(commit, database)
        let detail = "\(commit.mode.rawValue) commit of \(database.path)" + (quiet ? Trigger.afterTheInterval : "")
        let trigger = Trigger(kind: .sqlite, detail: detail)
        do throws(SnapshotFailure) {
            switch sqlite.options.scope {
            case .tree:
                if quiet { return }   // taken by the caller, inside the frozen gate
                _ = try engine.take(label: nil, trigger: trigger, force: true, excluding: serving, atCommit: { info })
            case .database:
                var base: (snapshot: String, frame: UInt32)?
                var salts: [UInt32] = []
                if let log = commit.walLog, let header = log.header {
                    salts = [header.salt1, header.salt2]
                    if let last = sqlite.policy.lastWALSnapshot(of: database.path), last.salts == salts, last.frame < log.committedFrames {
                        base = (last.snapshot, last.frame)
                    }
                }
                let source = DatabaseSnapshotSource(file: dup(database.fd), path: database.path, pageSize: header.pageSize,
                                                    walFile: database.walFD >= 0 ? dup(database.walFD) : -1, wal: commit.walLog,
                                                    walFormat: header.writeVersion == 2 || header.readVersion == 2, base: base,
                                                    committedSize: committedSize(of: database))
                if commit.walLog == nil, !source.walFormat, engine.clonesDatabaseFiles {
                    source.writtenSinceLastSnapshot = liveInode(of: BackingKey(database.status))?.sqlite.takeWrittenRanges()
                }
                let metadata = try engine.takeDatabase(source, trigger: trigger, info: info, alreadySerial: quiet)
                let next = commit.walLog.map { SQLiteCommitPolicy.WALSnapshotBase(snapshot: metadata.name, frame: $0.committedFrames, salts: salts) }
                sqlite.policy.noteWALSnapshot(next, of: database.path)
            }
            sqlite.snapshots.add(1, ordering: .relaxed)
        } catch where error.skippedForSpace {
            return   // counted and logged by the engine, not a failure of the commit's snapshot
        } catch {
            throw error.errno
        }
    }

    /// The database's size as its header says, when that is valid (docs/sqlite.md: a non-zero
    /// page count, and the change counter equal to version-valid-for).
    private func committedSize(of database: OpenDatabase) -> Int64? {
        let header: SQLiteDatabaseHeader = database.header
        guard header.pageCount > 0, header.changeCounter == header.versionValidFor else { return nil }
        return Int64(header.pageCount) * Int64(header.pageSize)
    }

    /// With the kernel's write-back cache, a database's pages may still be in the kernel
    /// at a rollback-mode commit (`synchronous=OFF` does not sync them first): they are
    /// pushed to the daemon before the commit is looked at. (A WAL snapshot takes every
    /// page committed in the log's generation from the log: ``makeWALDatabaseCurrent(_:serving:)``.)
    private func pushKernelPagesOfDatabase(_ commit: SQLiteCommit, serving: UInt64?) {
        guard options.kernelWritebackCache, commit.mode != .wal, sqlite.options.mode == .snapshot else { return }
        pushKernelPages(ofFile: commit.location.name, in: commit.location.directoryInode, serving: serving)
    }

    /// The live tree's inode of the backing object `key`, if the kernel knows it.
    func liveInode(of key: BackingKey) -> Inode? {
        guard let id = inodes.id(of: key, snapshotView: false) else { return nil }
        return try? inodes.inode(id)
    }

    /// The database's data in the page cache goes to its file before the commit is looked at.
    private func writeBackCachedDatabase(_ fd: Int32) throws(Errno) {
        guard let cache else { return }
        var st = stat()
        guard fstat(fd, &st) == 0, let node = liveInode(of: BackingKey(st)), node.cache.used.load(ordering: .relaxed) else { return }
        try cache.writeBack(node.id, backing: cacheStore)
    }

    /// `name` in the directory `dir` (open as `dirFD`), relative to the backing root. The
    /// directory's own path is remembered until a rename or rmdir.
    func relativePath(of dir: Inode, _ dirFD: Int32, name: [UInt8]) -> String {
        let file = String(decoding: name, as: UTF8.self)
        guard let directory = sqliteNodes.directoryPath(of: dir) ?? directoryPath(of: dir, dirFD) else { return file }
        return directory.isEmpty ? file : directory + "/" + file
    }

    /// The path of the directory `dir` (open as `dirFD`) relative to the backing root ("" for
    /// the root), worked out from the descriptor and remembered; nil if it is not inside.
    func directoryPath(of dir: Inode, _ dirFD: Int32) -> String? {
        let generation = sqliteNodes.namesGeneration.load(ordering: .acquiring)
        guard let target = proc.target(of: dirFD) else { return nil }
        let prefix = rootPath.hasSuffix("/") ? rootPath : rootPath + "/"
        let directory: String
        if target == rootPath {
            directory = ""
        } else if target.hasPrefix(prefix) {
            directory = String(target.dropFirst(prefix.count))
        } else {
            return nil
        }
        sqliteNodes.noteDirectoryPath(directory, of: dir, generation: generation)
        return directory
    }

    // MARK: the interval

    /// Snapshots the commits whose `--sqlite-min-interval` ran out with no later commit, at
    /// their database's newest committed state, with every change held back meanwhile
    /// (which is what they cost the application, noted for `auto`). Runs on the interval
    /// thread, and at unmount (`all`). A database found in the middle of a transaction is
    /// left to the commit that ends it (``SQLiteCommitDetector/notYet(_:path:nowUs:)``).
    public func snapshotDueSQLiteCommits(all: Bool = false) {
        guard let engine else { return }
        for (path, commit) in sqlite.policy.dueCommits(nowUs: all ? .max : SnapshotEngine.monotonicUs()) {
            let started = SnapshotEngine.monotonicUs()
            defer {
                sqlite.policy.noteCost(SnapshotEngine.monotonicUs() - started, of: path)
                sqlite.policy.handOverDone()
            }
            do {
                if sqlite.options.scope == .tree {
                    var failure: Errno?
                    _ = try engine.take(label: nil, trigger: Trigger(kind: .sqlite, detail: "\(commit.mode.rawValue) commit" + Trigger.afterTheInterval),
                                        force: true, atCommit: { () -> SQLiteCommitInfo? in
                        do throws(Errno) {
                            var underWay = false
                            return try self.quietState(of: commit, underWay: &underWay)?.info
                        } catch {
                            failure = error
                            return nil
                        }
                    })
                    if let failure { throw failure }
                    sqlite.snapshots.add(1, ordering: .relaxed)
                } else {
                    var underWay = false
                    pullWALDatabase(commit)
                    try engine.whileFrozen { () throws(Errno) in
                        guard let (current, database, _) = try quietState(of: commit, underWay: &underWay) else { return }
                        try snapshot(current, of: database, engine: engine, serving: nil, quiet: true)
                    }
                    if underWay && !all { sqlite.policy.notYet(commit, path: path, nowUs: SnapshotEngine.monotonicUs()) }
                }
            } catch let error as SnapshotFailure {
                sqlite.failures.add(1, ordering: .relaxed)
                logger.error("snapshot after the SQLite interval failed: \(error.message)")
            } catch {
                sqlite.failures.add(1, ordering: .relaxed)
                logger.error("snapshot after the SQLite interval failed: \(error)")
            }
        }
    }

    /// Starts the thread that takes the snapshots `--sqlite-min-interval` postponed, each
    /// when it is due (it sleeps while none waits).
    public func startSQLiteFlusher() {
        guard sqlite.policy.defersCommits else { return }
        sqlite.policy.dueTimer.start {
            self.snapshotDueSQLiteCommits()
            return self.sqlite.policy.nextDueUs
        }
    }

    /// With changes held back: the database's newest committed state, or nil when a
    /// transaction is under way (a hot journal, and `underWay` set: its commit will come)
    /// or the database is gone.
    private func quietState(of pending: SQLiteCommit, underWay: inout Bool) throws(Errno) -> (commit: SQLiteCommit, database: OpenDatabase, info: SQLiteCommitInfo)? {
        var commit = pending
        if commit.mode == .wal {
            if let key = commit.walKey, let log = sqlite.logs.walLog(key) {
                // The log restarted after `pullWALDatabase` made the database current (its
                // new generation came with a later write-back): the checkpoint before the
                // restart may still be in the kernel's cache. Looked at again.
                if let header = log.header, !walDatabaseIsCurrent(ofLog: key, header: header) {
                    underWay = true
                    return nil
                }
                // Frames after the newest commit are not committed; the log's state is.
                commit.walLog = log
                commit.wal = WALCommit(frame: log.committedFrames, databasePages: log.committedDatabasePages,
                                       checkpointSequence: log.header?.checkpointSequence ?? 0)
            } else {
                // The log holds no committed frame: it was checkpointed whole and then reset,
                // truncated, or removed (as the last connection's close does). The database
                // file alone is the committed state; a transaction under way writes only the log.
                commit.walLog = nil
                commit.wal = nil
            }
        } else {
            let hot = try commit.location.directoryInode.withFD { (dirFD) throws(Errno) -> Bool in
                let journal = Self.openForReading(commit.location.name + Array("-journal".utf8), in: dirFD)
                guard journal >= 0 else { return false }
                defer { close(journal) }
                return Self.isHotJournal(journal)
            }
            if hot {
                underWay = true
                return nil
            }
        }
        guard let database = try openDatabase(commit) else { return nil }
        return (commit, database, commitInfo(commit, database))
    }

    /// The metadata of a commit snapshot.
    private func commitInfo(_ commit: SQLiteCommit, _ database: OpenDatabase) -> SQLiteCommitInfo {
        let header: SQLiteDatabaseHeader = database.header
        let sequence = commit.mode != .wal ? Int64(header.changeCounter) : sqlite.policy.commitCount(of: database.path)
        let size = commit.wal.map { Int64($0.databasePages) * Int64(header.pageSize) } ?? Int64(database.status.st_size)
        return SQLiteCommitInfo(database: database.path, journalMode: commit.mode.rawValue, sequence: sequence,
                                size: size, walFrame: commit.wal.map { Int64($0.frame) })
    }
}

/// A database file open for reading, with its header and its log (WAL mode).
final class OpenDatabase {
    let fd: Int32
    let walFD: Int32
    var status = stat()
    var header: SQLiteDatabaseHeader!
    var path = ""

    init(fd: Int32, walFD: Int32) {
        self.fd = fd
        self.walFD = walFD
    }

    deinit {
        close(fd)
        if walFD >= 0 { close(walFD) }
    }
}
