import Synchronization
import SnapFSBacking

/// Which commits get a snapshot (`--sqlite-min-interval`): per database, what the last
/// commit looked like (to tell a ROLLBACK, which ends a rollback journal exactly as a
/// commit does, from a commit), when it was last snapshotted and at what cost, and the
/// commit waiting for the end of its interval.
public final class SQLiteCommitPolicy: Sendable {
    public let options: SQLiteOptions

    struct DatabaseRecord {
        /// The database file as the last commit left it: change counter, mtime, size.
        var fingerprint: [Int64] = []
        /// When the last snapshot was decided (monotonic microseconds).
        var lastSnapshotUs: Int64 = .min
        /// What the last snapshot's work has cost the application so far, in microseconds:
        /// its build at the commit, and with hard links the copy-up that the next write paid.
        var costUs: Int64 = 0
        /// Commits seen since the mount.
        var commits: Int64 = 0
        /// The newest snapshot of this database in WAL mode, which the next can start from.
        var lastWALSnapshot: WALSnapshotBase?
        /// A commit not snapshotted yet (inside the interval), and when it is due.
        var pending: SQLiteCommit?
        var dueUs: Int64 = 0
    }

    private let databases = Mutex<[String: DatabaseRecord]>([:])

    /// Commits recognised.
    public let commits = Atomic<Int>(0)
    /// Journal endings that were rollbacks (the database file did not change).
    public let rollbacks = Atomic<Int>(0)
    /// Commits left to a later snapshot by the interval.
    public let deferred = Atomic<Int>(0)
    /// Commits handed over by ``dueCommits(nowUs:)`` whose snapshot is still being taken.
    public let handedOver = Atomic<Int>(0)
    /// `auto`: the floor of the interval, in microseconds, set from the strategy once the
    /// engine knows it (``useAutoFloor(ms:)``); until then the floor of a full copy.
    public let autoFloorUs = Atomic<Int64>(SQLiteOptions.fullCopyFloorMs * 1000)
    /// Takes the snapshots of the commits whose interval ran out with no later commit: run
    /// at the earliest due time (started by the filesystem when it has an engine).
    package let dueTimer = DeadlineThread()

    public init(options: SQLiteOptions) {
        self.options = options
    }

    /// Sets the floor of `auto`: the shortest interval between two snapshots of one
    /// database that the snapshot strategy allows.
    public func useAutoFloor(ms: Int64) {
        autoFloorUs.store(ms * 1000, ordering: .relaxed)
    }

    /// How often the pages of a log the kernel caches are pulled to snapfs: the floor of
    /// `auto`, or the fixed interval.
    public var pullPeriodUs: Int64 {
        if case .fixed(let ms) = options.minInterval, ms > 0 { return ms.multipliedReportingOverflow(by: 1000).overflow ? .max / 2 : ms * 1000 }
        return autoFloorUs.load(ordering: .relaxed)
    }

    /// Whether commits may be left to a later snapshot (`auto`, or a fixed interval).
    public var defersCommits: Bool {
        guard options.mode == .snapshot else { return false }
        if case .fixed(let ms) = options.minInterval { return ms > 0 }
        return true
    }

    public enum Decision: Equatable, Sendable {
        case snapshot
        /// A rollback: the database is as the previous commit left it.
        case rollback
        /// Covered by a later snapshot (inside the interval).
        case deferred
        /// Detection only, or a database the globs leave out.
        case ignore
    }

    /// The interval in force (microseconds) for a database whose last snapshot cost `costUs`.
    func intervalUs(afterCost costUs: Int64) -> Int64 {
        switch options.minInterval {
        case .fixed(let ms):
            return ms.multipliedReportingOverflow(by: 1000).overflow ? .max : ms * 1000
        case .auto:
            // From one snapshot's start to the next: its cost, then k times that for the application.
            let paced = costUs.multipliedReportingOverflow(by: SQLiteOptions.idleFactor + 1)
            return max(autoFloorUs.load(ordering: .relaxed), paced.overflow ? .max : paced.partialValue)
        }
    }

    /// What to do about `commit` of the database at `path` (relative to the root: a
    /// database keeps its path while copy-ups give it new backing objects) at `nowUs`
    /// (monotonic microseconds). `fingerprint`: for the rollback modes, the file's change
    /// counter, mtime and size now. A commit left to a later snapshot has that snapshot
    /// scheduled on ``dueTimer``.
    public func decide(_ commit: SQLiteCommit, path: String, fingerprint: [Int64]?, nowUs: Int64) -> Decision {
        var dueUs: Int64?
        defer { if let dueUs { dueTimer.schedule(atUs: dueUs) } }
        return databases.withLock { table in
            var record = table[path] ?? DatabaseRecord()
            defer { table[path] = record }
            if let fingerprint {
                // A ROLLBACK ends the journal as a commit does; the file then did not change.
                // (With locking_mode=EXCLUSIVE the counter stays, but mtime moves on a commit.)
                if fingerprint == record.fingerprint {
                    rollbacks.add(1, ordering: .relaxed)
                    return .rollback
                }
                record.fingerprint = fingerprint
            }
            let transactions = commit.wal?.transactions ?? 1
            commits.add(transactions, ordering: .relaxed)
            record.commits += Int64(transactions)
            guard options.mode == .snapshot, options.covers(path) else { return .ignore }
            let interval = intervalUs(afterCost: record.costUs)
            let sinceLast = nowUs.subtractingReportingOverflow(record.lastSnapshotUs)
            if interval <= 0 || sinceLast.overflow || sinceLast.partialValue >= interval {
                record.lastSnapshotUs = nowUs
                record.costUs = 0
                record.pending = nil
                return .snapshot
            }
            record.pending = commit
            let due = record.lastSnapshotUs.addingReportingOverflow(interval)
            record.dueUs = due.overflow ? .max : due.partialValue
            dueUs = record.dueUs.addingReportingOverflow(Self.trailingGraceUs).overflow ? .max : record.dueUs + Self.trailingGraceUs
            deferred.add(1, ordering: .relaxed)
            return .deferred
        }
    }

    /// A commit handed over by ``dueCommits(nowUs:)`` is done with (snapshotted, failed, or
    /// put back by ``notYet(_:path:nowUs:)``).
    public func handOverDone() {
        handedOver.subtract(1, ordering: .relaxed)
    }

    /// The last snapshot of the database at `path` cost the application `us` more
    /// microseconds (its build, or the copy-up that followed it).
    public func noteCost(_ us: Int64, of path: String) {
        guard us > 0 else { return }
        databases.withLock { table in
            guard table[path] != nil else { return }
            let sum = table[path]!.costUs.addingReportingOverflow(us)
            table[path]!.costUs = sum.overflow ? .max : sum.partialValue
        }
    }

    /// A WAL database's newest snapshot, which a later one of the same log generation can
    /// start from (laying over it only the frames committed since).
    public struct WALSnapshotBase: Sendable, Equatable {
        public var snapshot: String
        public var frame: UInt32
        public var salts: [UInt32]

        public init(snapshot: String, frame: UInt32, salts: [UInt32]) {
            self.snapshot = snapshot
            self.frame = frame
            self.salts = salts
        }
    }

    public func lastWALSnapshot(of path: String) -> WALSnapshotBase? {
        databases.withLock { $0[path]?.lastWALSnapshot }
    }

    public func noteWALSnapshot(_ base: WALSnapshotBase?, of path: String) {
        databases.withLock { $0[path, default: DatabaseRecord()].lastWALSnapshot = base }
    }

    /// How many commits of the database at `path` snapfs has seen since the mount.
    public func commitCount(of path: String) -> Int64 {
        databases.withLock { $0[path]?.commits ?? 0 }
    }

    /// How long after its interval a deferred commit waits for a later commit to take the
    /// snapshot (at that commit, as the policy prefers) before it is taken without one.
    /// While commits flow, the next comes sooner; once they stop, this is added to the
    /// recovery point.
    public static let trailingGraceUs: Int64 = 10_000
    /// How soon a deferred commit found with a transaction under way is looked at again.
    public static let retryUs: Int64 = 50_000

    /// The commits whose interval (and grace) has run out without a later commit taking
    /// them, with their database's path; they are handed over once (and count as
    /// snapshotted now).
    public func dueCommits(nowUs: Int64) -> [(path: String, commit: SQLiteCommit)] {
        databases.withLock { table in
            var due: [(path: String, commit: SQLiteCommit)] = []
            for (key, record) in table {
                guard let pending = record.pending, record.dueUs <= nowUs.subtractingReportingOverflow(Self.trailingGraceUs).partialValue
                      || nowUs == .max else { continue }
                due.append((key, pending))
                handedOver.add(1, ordering: .relaxed)
                table[key]!.pending = nil
                table[key]!.lastSnapshotUs = nowUs
                table[key]!.costUs = 0
            }
            return due
        }
    }

    /// A commit the policy chose to snapshot that must be taken off the request that found
    /// it (its database file must first be made current, which that request cannot wait
    /// for): it becomes due at once, for the interval thread.
    public func handToIntervalThread(_ commit: SQLiteCommit, path: String, nowUs: Int64) {
        databases.withLock { table in
            guard table[path] != nil else { return }
            table[path]!.pending = commit
            table[path]!.dueUs = nowUs.subtractingReportingOverflow(Self.trailingGraceUs).partialValue
        }
        deferred.add(1, ordering: .relaxed)
        dueTimer.schedule(atUs: nowUs)
    }

    /// A commit handed over by ``dueCommits(nowUs:)`` found a transaction under way: the
    /// commit that ends it is snapshotted at once, and should none come (a rollback, a
    /// writer gone) `commit` is looked at again at `retryUs`.
    public func notYet(_ commit: SQLiteCommit, path: String, nowUs: Int64) {
        let retry = nowUs.addingReportingOverflow(Self.retryUs).overflow ? Int64.max : nowUs + Self.retryUs
        let waiting = databases.withLock { table in
            guard table[path] != nil else { return false }
            table[path]!.lastSnapshotUs = .min
            if table[path]!.pending == nil {
                table[path]!.pending = commit
                table[path]!.dueUs = retry - Self.trailingGraceUs
            }
            return true
        }
        if waiting { dueTimer.schedule(atUs: retry) }
    }

    /// When the first commit waiting for its interval is to be handed over (monotonic
    /// microseconds): its due time and the grace.
    public var nextDueUs: Int64? {
        let due = databases.withLock { table in table.values.lazy.filter { $0.pending != nil }.map(\.dueUs).min() }
        return due.map { $0.addingReportingOverflow(Self.trailingGraceUs).overflow ? .max : $0 + Self.trailingGraceUs }
    }

    /// The policy in force, and across the databases (never named: the status is for
    /// every user, and a database's path is root's) how many there are, how many commits
    /// wait for a last snapshot (or are being snapshotted after their interval), and the
    /// longest interval in force now.
    func statusLines() -> [String] {
        var lines: [String]
        switch options.minInterval {
        case .auto:
            let floor = autoFloorUs.load(ordering: .relaxed) / 1000
            lines = ["sqlite-min-interval: auto (at least \(floor)ms, and \(SQLiteOptions.idleFactor + 1)× the last snapshot's cost)"]
        case .fixed(0):
            lines = ["sqlite-min-interval: 0 (every commit)"]
        case .fixed(let ms):
            lines = ["sqlite-min-interval: \(ms)ms"]
        }
        let (count, pending, longest) = databases.withLock { table in
            (table.count, table.values.count { $0.pending != nil },
             table.values.lazy.filter { $0.lastSnapshotUs != .min }.map { self.intervalUs(afterCost: $0.costUs) }.max())
        }
        lines.append("sqlite-databases: \(count)")
        lines.append("sqlite-pending: \(pending + handedOver.load(ordering: .relaxed))")
        if let longest { lines.append("sqlite-interval-now: \(longest / 1000)ms") }
        return lines
    }
}
