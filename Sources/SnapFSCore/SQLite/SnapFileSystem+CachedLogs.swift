import Glibc
import SnapFSBacking
import SnapFSSQLite
import Synchronization
import SystemPackage

/// SQLite write-ahead logs in the kernel's page cache.
///
/// On a mount with the kernel's write-back cache, a WAL is cached like any other file
/// unless every commit must get its own snapshot (`--sqlite-min-interval 0`) or a commit
/// snapshots the whole tree (`--sqlite-scope tree`, which pushes every other file's pages
/// from inside the log's request): its writes
/// and reads then cost no request, and commits reach snapfs when the kernel writes the
/// log's pages back — at the application's `fsync` (every commit with
/// `synchronous=FULL`, every checkpoint with `NORMAL`), at its close, and, with commit
/// snapshots on, when snapfs asks:
/// - every log open for writing has its dirty pages pulled once per interval of the
///   commit policy (the `auto` floor: 100 ms where snapshots clone, 1 s where they copy;
///   a fixed interval's own length), unless the application synced it meanwhile, so the
///   final state of a database is snapshotted within about three intervals of its last
///   commit;
/// - before a write to a database whose log is cached, the log's pages are pulled first:
///   a checkpoint without a sync of the log (`synchronous=OFF`) must not let the database
///   file hold pages of commits snapfs has not seen, or a commit snapshot (the file with
///   the frames snapfs knows laid over it) would mix two states. Not when the log was
///   synced since the database's last sync: with `synchronous=NORMAL` or `FULL` a
///   checkpoint syncs the log before it writes the database and syncs the database after,
///   so the pages it writes come from frames snapfs has. (A pull drops the log's pages
///   from the kernel's cache, and the application's next partial-page writes read them
///   back: 1.6 reads per transaction of the mixed benchmark when every checkpoint pulled.)
/// Tree snapshots already pull every file open for writing before their moment.
extension SnapFileSystem {
    /// Whether SQLite's write-ahead logs go through the kernel's page cache.
    var logsInKernelCache: Bool {
        options.kernelWritebackCache && sqlite.options.scope == .database
            && (sqlite.options.mode == .detect || sqlite.policy.defersCommits)
    }

    /// At open: a log the kernel caches and writes, while commit snapshots are on, is
    /// pulled from now on (and before its database's writes).
    func noteCachedLogOpened(_ node: Inode, flags: Int32) {
        guard sqlite.options.mode == .snapshot, flags & O_ACCMODE != O_RDONLY,
              node.sqlite.role.load(ordering: .relaxed) == SQLiteRole.wal.rawValue, logsInKernelCache,
              let location = databaseLocation(of: node) else { return }
        let key = try? regularFileKey(location.name, in: location.directoryInode)
        let database = (key ?? nil).flatMap { inodes.id(of: $0, snapshotView: false) }
        guard sqliteNodes.noteCachedLog(node, database: database) else { return }
        let period = sqlite.policy.pullPeriodUs
        sqliteNodes.logPuller.start { [weak self] () -> Int64? in
            guard let self, let due = self.sqliteNodes.logsDueForPull() else { return nil }
            if !due.isEmpty, let kernel = self.kernel.value { kernel.pushDirtyPages(of: due) }
            return MonotonicClock.microseconds() + period
        }
        sqliteNodes.logPuller.schedule(atUs: MonotonicClock.microseconds() + period)
    }

    /// Before a write to a database whose log the kernel caches: the log's pages first,
    /// unless the log was synced since the database was.
    @inline(__always)
    func pullLogBeforeDatabaseWrite(_ file: OpenFile) {
        guard let log = sqliteNodes.cachedLog(ofDatabase: file.inode.id), log.id != file.inode.id,
              !log.synced, let kernel = kernel.value else { return }
        kernel.pushDirtyPages(of: [log.id])
    }
}

extension SQLiteNodes {
    /// A log the kernel caches, open for writing when it was noted: held weakly, with the
    /// node id of its database when the log was opened.
    final class CachedLog: Sendable {
        weak let log: Inode?
        let database: UInt64?
        /// Synced since its database last was.
        let synced = Atomic<Bool>(false)
        /// Synced since the last pull.
        let syncedSincePull = Atomic<Bool>(false)

        init(_ log: Inode, database: UInt64?) {
            self.log = log
            self.database = database
        }
    }

    static let cachedLogLimit = 1024

    /// Notes a cached log; false when it was noted already, or the table is full of logs
    /// still open (a log left out is still pulled by its own `fsync` and close).
    func noteCachedLog(_ log: Inode, database: UInt64?) -> Bool {
        let added = cachedLogs.withLock { table -> Bool in
            if table[log.id]?.log === log { return false }
            if table.count >= Self.cachedLogLimit {
                table = table.filter { $0.value.log?.isOpenForWriting == true }
                if table.count >= Self.cachedLogLimit { return false }
            }
            table[log.id] = CachedLog(log, database: database)
            return true
        }
        if added { anyCachedLog.store(true, ordering: .releasing) }
        return added
    }

    /// The cached logs open for writing that were not synced since the last pull (the
    /// logs no longer open are forgotten); nil when none is open.
    func logsDueForPull() -> [UInt64]? {
        cachedLogs.withLock { table -> [UInt64]? in
            table = table.filter { $0.value.log?.isOpenForWriting == true }
            if table.isEmpty {
                anyCachedLog.store(false, ordering: .releasing)
                return nil
            }
            return table.filter { !$0.value.syncedSincePull.exchange(false, ordering: .acquiringAndReleasing) }.map(\.key)
        }
    }

    /// The cached log of the database `database`, if one is noted: its node id, and
    /// whether it was synced since the database.
    @inline(__always)
    func cachedLog(ofDatabase database: UInt64) -> (id: UInt64, synced: Bool)? {
        guard anyCachedLog.load(ordering: .acquiring) else { return nil }
        return cachedLogs.withLock { table in
            table.first { $0.value.database == database && $0.value.log != nil }
                .map { ($0.key, $0.value.synced.load(ordering: .acquiring)) }
        }
    }

    /// After an fsync of the node `id`: a cached log (its pages are all with snapfs), or a
    /// database with one (the next checkpoint syncs the log again first, if it ever does).
    @inline(__always)
    func noteSynced(_ id: UInt64) {
        guard anyCachedLog.load(ordering: .acquiring) else { return }
        cachedLogs.withLock { table in
            if let log = table[id] {
                log.synced.store(true, ordering: .releasing)
                log.syncedSincePull.store(true, ordering: .releasing)
            } else if let log = table.values.first(where: { $0.database == id }) {
                log.synced.store(false, ordering: .releasing)
            }
        }
    }
}
