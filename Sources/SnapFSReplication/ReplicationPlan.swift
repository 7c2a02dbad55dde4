import SnapFSSnapshots

/// Which snapshots a replication run sends, in which order, and which commit snapshots it
/// passes over.
///
/// Every snapshot not yet replicated (nor passed over) is sent, oldest first, except the
/// snapshots taken at SQLite commits, of which one per interval per database is sent, and
/// the final state: intervals are aligned on the epoch (with 5 s: :00, :05, :10, …), and of
/// the waiting commit snapshots of a database the first of each interval is sent (the
/// state as the interval began, which holds every commit of the interval before), unless
/// one of that interval was sent by an earlier run; the newest of all (the database's final
/// state as far as the run knows) is also sent. A snapshot passed over is recorded with the
/// later one of its database that stands for it, in the same write of the record.
///
/// Why the first, not the newest: the first of an interval can go at once, while the newest
/// is only known once the interval has ended, and is then up to the commit policy's spacing
/// older than that end. Sending the first, a commit waits for the next interval's start
/// and the run, not for the end of that interval as well.
///
/// A replicator that comes back (the daemon) holds back the final state (a later snapshot
/// would stand for it: of the same interval, or the first of the next) until its interval
/// has ended if it was taken once the writer went quiet, else until half an interval
/// later, when under a steady load the first of the next interval has come; it is sent
/// then if nothing newer came.
public struct ReplicationPlan: Equatable, Sendable {
    /// A snapshot of the backing store, as the plan needs it.
    public struct Candidate: Equatable, Sendable {
        public var name: SnapshotName
        /// The database, for a snapshot taken at a SQLite commit; nil otherwise.
        public var database: String?
        /// A commit snapshot taken once the writer went quiet (``Trigger/isAfterTheInterval``).
        public var quiet: Bool

        public init(name: SnapshotName, database: String? = nil, quiet: Bool = false) {
            self.name = name
            self.database = database
            self.quiet = quiet
        }

        /// The candidate for a snapshot of the store.
        public init(_ entry: SnapshotEntry) {
            self.init(name: entry.name, database: entry.metadata?.sqlite?.database,
                      quiet: entry.metadata?.trigger.isAfterTheInterval ?? false)
        }
    }

    /// One snapshot to send, and the commit snapshots it stands for.
    public struct Step: Equatable, Sendable {
        public var name: SnapshotName
        public var passesOver: [SnapshotName]
    }

    public var steps: [Step]
    /// When the interval of the commit snapshots held back ends (ms since the epoch), if any.
    public var nextDueMs: Int64?

    /// - Parameters:
    ///   - local: the snapshots of the backing store, in any order.
    ///   - done: names already replicated or passed over.
    ///   - lastSentCommitMs: per database, the time of the newest commit snapshot in the
    ///     repository.
    ///   - intervalMs: the commit interval; 0 sends every commit snapshot.
    ///   - nowMs: hold back the commit snapshots of the interval running at this time; nil:
    ///     send the newest of each database now.
    public init(local: [Candidate], done: Set<String>, lastSentCommitMs: [String: Int64], intervalMs: Int64,
                holdingOpenAt nowMs: Int64? = nil) {
        let waiting = local.filter { !done.contains($0.name.description) }.sorted { $0.name < $1.name }
        var chosen: [SnapshotName: [SnapshotName]] = [:]
        var byDatabase: [String: [SnapshotName]] = [:]
        var quiet: Set<SnapshotName> = []
        for candidate in waiting {
            if let database = candidate.database {
                byDatabase[database, default: []].append(candidate.name)
                if candidate.quiet { quiet.insert(candidate.name) }
            } else {
                chosen[candidate.name] = []
            }
        }
        for (database, all) in byDatabase {
            var passed: [SnapshotName] = []
            var sentInterval = lastSentCommitMs[database].map { Self.interval($0, intervalMs) }
            for (index, name) in all.enumerated() {
                let interval = Self.interval(name.timeMs, intervalMs)
                if interval != sentInterval {
                    // The first of its interval.
                    chosen[name] = passed
                    passed = []
                    sentInterval = interval
                } else if index < all.count - 1 {
                    passed.append(name)
                } else if let nowMs, nowMs < Self.finalStateDue(interval, intervalMs, quiet: quiet.contains(name)) {
                    // The final state, held back (and with it, the ones it would pass over):
                    // under a steady load the first of the next interval comes soon and
                    // stands for it.
                    let due = Self.finalStateDue(interval, intervalMs, quiet: quiet.contains(name))
                    nextDueMs = min(nextDueMs ?? due, due)
                } else {
                    chosen[name] = passed
                    passed = []
                }
            }
        }
        steps = chosen.keys.sorted().map { Step(name: $0, passesOver: chosen[$0]!) }
    }

    /// When the final state of `interval` is sent if nothing newer came: at that interval's
    /// end for a snapshot taken once the writer went quiet (nothing newer is coming), half
    /// an interval later for one taken at a commit (the first of the next interval, a
    /// commit-policy spacing after its start, usually stands for it).
    static func finalStateDue(_ interval: Int64, _ intervalMs: Int64, quiet: Bool) -> Int64 {
        guard intervalMs > 0 else { return interval + 1 }
        return (interval + 1) * intervalMs + (quiet ? 0 : intervalMs / 2)
    }

    /// The interval a time falls in; with no interval, every millisecond is its own.
    static func interval(_ timeMs: Int64, _ intervalMs: Int64) -> Int64 {
        intervalMs > 0 ? timeMs / intervalMs : timeMs
    }
}
