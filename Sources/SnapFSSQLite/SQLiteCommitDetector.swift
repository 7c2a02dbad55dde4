import Glibc
import SnapFSBacking
import Synchronization

/// How a database's transactions end on disk (`PRAGMA journal_mode`), as far as snapfs
/// can tell from the operations it sees.
public enum JournalMode: String, Sendable {
    case delete, truncate, persist, wal
}

/// The directory that holds a database, as the filesystem knows it. Commit detection
/// needs only its identity (the node id the kernel knows it by, never reused while the
/// directory lives); a commit waiting for its snapshot keeps it alive.
public protocol DatabaseDirectory: AnyObject, Sendable {
    var nodeID: UInt64 { get }
}

/// A database by where it is: the directory that holds it, and its name there.
public struct DatabaseLocation: Sendable {
    public let directory: any DatabaseDirectory
    /// The name, without a terminating NUL.
    public let name: [UInt8]

    public init(directory: any DatabaseDirectory, name: [UInt8]) {
        self.directory = directory
        self.name = name
    }
}

/// A commit snapfs saw, with what a snapshot of it needs.
public struct SQLiteCommit: Sendable {
    public var location: DatabaseLocation
    public var mode: JournalMode
    /// WAL mode: the commit and the log's committed state through it (newest frame of every page).
    public var wal: WALCommit?
    public var walLog: WALTracker?
    /// WAL mode: the log's backing object.
    public var walKey: BackingKey?

    public init(location: DatabaseLocation, mode: JournalMode, wal: WALCommit? = nil,
                walLog: WALTracker? = nil, walKey: BackingKey? = nil) {
        self.location = location
        self.mode = mode
        self.wal = wal
        self.walLog = walLog
        self.walKey = walKey
    }
}

/// Commit detection across all databases of a mount: the write-ahead logs being followed
/// (``WALLogs``), how each database's last rollback journal ended, the policy that decides
/// which commits get a snapshot (``SQLiteCommitPolicy``), and the counters `status` shows.
public final class SQLiteCommitDetector: Sendable {
    public let options: SQLiteOptions
    public let logs = WALLogs()
    public let policy: SQLiteCommitPolicy
    /// Commit snapshots taken, and commits whose snapshot failed.
    public let snapshots = Atomic<Int>(0)
    public let failures = Atomic<Int>(0)

    public init(options: SQLiteOptions) {
        self.options = options
        self.policy = SQLiteCommitPolicy(options: options)
    }

    public var isActive: Bool { options.mode != .off }

    // MARK: how rollback journals end

    /// A database by its directory's node id and its name.
    struct DatabaseName: Hashable {
        let directory: UInt64
        let name: [UInt8]
    }

    /// Databases whose last journal ended by its removal (DELETE mode, not exclusive).
    private let removingJournals = Mutex<Set<DatabaseName>>([])
    static let removingJournalsLimit = 4096

    /// A journal of `location` ended by its removal (a commit or a rollback in DELETE mode).
    public func journalRemoved(of location: DatabaseLocation) {
        removingJournals.withLock { set in
            if set.count >= Self.removingJournalsLimit { set.removeAll(keepingCapacity: true) }
            set.insert(DatabaseName(directory: location.directory.nodeID, name: location.name))
        }
    }

    /// A journal of `location` ended otherwise (TRUNCATE, PERSIST, exclusive locking).
    public func journalKept(of location: DatabaseLocation) {
        _ = removingJournals.withLock { $0.remove(DatabaseName(directory: location.directory.nodeID, name: location.name)) }
    }

    /// Whether the last journal of `location` ended by its removal.
    public func removesJournals(_ location: DatabaseLocation) -> Bool {
        removingJournals.withLock { $0.contains(DatabaseName(directory: location.directory.nodeID, name: location.name)) }
    }

    /// Journals opened for the kernel to write directly.
    public let journalsPassedThrough = Atomic<Int>(0)

    /// `key: value` lines for the control file and `snapfs status`.
    public func statusLines() -> [String] {
        var lines = ["sqlite: \(options.mode.rawValue)"]
        guard isActive else { return lines }
        lines.append("sqlite-scope: \(options.scope.rawValue)")
        if options.mode == .snapshot { lines += policy.statusLines() }
        lines.append("sqlite-commits: \(policy.commits.load(ordering: .relaxed))")
        lines.append("sqlite-snapshots: \(snapshots.load(ordering: .relaxed))")
        lines.append("sqlite-rollbacks: \(policy.rollbacks.load(ordering: .relaxed))")
        lines.append("sqlite-deferred: \(policy.deferred.load(ordering: .relaxed))")
        lines.append("sqlite-failures: \(failures.load(ordering: .relaxed))")
        lines.append("sqlite-journals-passed-through: \(journalsPassedThrough.load(ordering: .relaxed))")
        return lines
    }
}
