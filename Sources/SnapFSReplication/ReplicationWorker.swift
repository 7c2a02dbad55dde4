import Glibc
import Logging
import SnapFSBacking
import SnapFSSnapshots
import Synchronization

/// A mount's continuous replication (`-o replicate_to=`): a thread of its own that runs the
/// ``Replicator`` after snapshots are published, and again when held-back commit snapshots
/// are due, with backoff while the repository fails.
///
/// Nothing on the mount's paths waits for it: a snapshot only schedules a run (a mutex and
/// a signal, see ``snapshotPublished(_:)``), and status reads what the last run left.
public final class ReplicationWorker: SnapshotFollower, Sendable {
    public let replicator: Replicator
    private let logger: Logger
    private let thread = DeadlineThread()

    /// How long after a snapshot a run starts, so that snapshots published together are
    /// sent by one run.
    static let gatherUs: Int64 = 200_000
    /// The least time between the end of a run and the next, while snapshots keep coming.
    static let spacingUs: Int64 = 1_000_000
    /// The first wait after a failure, doubled at each failure up to ``maximumBackoffUs``.
    static let firstBackoffUs: Int64 = 1_000_000
    static let maximumBackoffUs: Int64 = 60_000_000
    /// The least time between two `restic prune` runs (after the retention rules forgot
    /// snapshots): pruning rewrites the repository's packs.
    static let pruneSpacingUs: Int64 = 3_600_000_000

    private struct State {
        /// Names replicated or passed over, as the last run left them.
        var done: Set<String> = []
        var failures = 0
        /// No run starts before this (monotonic µs): spacing after a run, backoff after a failure.
        var notBeforeUs: Int64 = 0
        var lastError: String?
        var lastErrorTime: String?
        var lastSuccess: String?
        var stopping = false
        /// When `restic prune` last ran (monotonic µs), and whether snapshots were forgotten since.
        var lastPruneUs: Int64?
        var pruneOwed = false
    }
    private let state = Mutex(State())

    public init(replicator: Replicator, logger: Logger) {
        self.replicator = replicator
        self.logger = logger
    }

    /// Starts the thread, with a first run for what is waiting since the last mount; until
    /// it ends, status counts as waiting what the record of this repository does not hold.
    public func start() {
        let path = replicator.backing + "/" + SnapshotCatalog.directoryName
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd >= 0 {
            let shown = replicator.repository.shown
            if let record = ReplicationRecord.forLocation(shown, snapshotsFD: fd) {
                state.withLock { $0.done = record.done }
            }
            close(fd)
        }
        thread.schedule(atUs: MonotonicClock.microseconds())
        thread.start { [self] in runOnce() }
    }

    /// Stops replicating: the restic child running now (if any) is interrupted and waited
    /// for (5 s at most), and no run starts after. For the end of the daemon.
    public func stop() {
        state.withLock { $0.stopping = true }
        replicator.repository.watch?.interrupt(timeoutMs: 5000)
    }

    public func snapshotPublished(_ metadata: SnapshotMetadata) {
        let notBefore = state.withLock { $0.notBeforeUs }
        thread.schedule(atUs: max(MonotonicClock.microseconds() + Self.gatherUs, notBefore))
    }

    /// One run; returns when the next is due (nil: at the next snapshot).
    private func runOnce() -> Int64? {
        let now = MonotonicClock.microseconds()
        let (stopping, notBefore, lastPrune, owed) = state.withLock { ($0.stopping, $0.notBeforeUs, $0.lastPruneUs, $0.pruneOwed) }
        if stopping { return nil }
        if now < notBefore { return notBefore }
        let pruneAllowed = lastPrune.map { now - $0 >= Self.pruneSpacingUs } ?? true
        let prune: Replicator.PruneWhen = !pruneAllowed ? .never : owed ? .always : .ifForgotten
        do {
            let report = try replicator.run(
                holdingOpenAt: SnapshotName.nowMs(), prune: prune,
                progress: { [self] sent in
                    state.withLock { $0.done.formUnion([sent.name] + sent.passedOver) }
                    logger.info("replicated snapshot \(sent.name) to \(replicator.repository.shown) as \(sent.id)")
                },
                cancelled: { [self] in state.withLock { $0.stopping } })
            let recovered = state.withLock { state in
                let recovered = state.failures > 0
                state.done = report.done
                state.failures = 0
                state.lastError = nil
                state.lastSuccess = UTCTime(milliseconds: SnapshotName.nowMs())?.iso8601
                state.notBeforeUs = MonotonicClock.microseconds() + Self.spacingUs
                if report.pruned {
                    state.lastPruneUs = MonotonicClock.microseconds()
                    state.pruneOwed = false
                } else if !report.forgotten.isEmpty {
                    state.pruneOwed = true
                }
                return recovered
            }
            if !report.forgotten.isEmpty {
                logger.notice("forgot \(report.forgotten.count) snapshots in \(replicator.repository.shown) by the retention rules\(report.pruned ? ", and pruned it" : "")")
            }
            if recovered { logger.notice("replication to \(replicator.repository.shown) works again") }
            guard let due = report.nextDueMs else { return nil }
            return MonotonicClock.microseconds() + max(0, due - SnapshotName.nowMs()) * 1000
        } catch {
            let (retry, changed) = state.withLock { state -> (Int64, Bool) in
                if state.stopping { return (.max, false) }
                state.failures += 1
                let backoff = min(Self.firstBackoffUs << min(state.failures - 1, 20), Self.maximumBackoffUs)
                state.notBeforeUs = MonotonicClock.microseconds() + backoff
                let changed = state.lastError != error.message
                state.lastError = error.message
                state.lastErrorTime = UTCTime(milliseconds: SnapshotName.nowMs())?.iso8601
                return (state.notBeforeUs, changed)
            }
            if retry == .max { return nil }
            // Once per kind of failure, not at every retry.
            if changed { logger.warning("replication to \(replicator.repository.shown) failed, retrying with backoff: \(error.message)") }
            return retry
        }
    }

    /// What the next runs will send: of the commit snapshots, only those the plan sends (the
    /// first of each interval, and the newest), so that commits made while the repository
    /// is away do not pile up beyond one per interval.
    public func mustKeep(_ entries: [SnapshotEntry]) -> Set<String> {
        let done = state.withLock { $0.done }
        let plan = ReplicationPlan(local: entries.map(ReplicationPlan.Candidate.init),
                                   done: done, lastSentCommitMs: [:], intervalMs: replicator.commitIntervalMs)
        return Set(plan.steps.map(\.name.description))
    }

    public func statusLines(_ entries: [SnapshotEntry]) -> [String] {
        let state = state.withLock { $0 }
        let waiting = entries.filter { !state.done.contains($0.name.description) }
        var lines = [
            "replicate-to: \(replicator.repository.shown)",
            "replication-waiting: \(waiting.count)",
            "replication-oldest-waiting: \(waiting.first?.name.description ?? "-")",
        ]
        lines.append("replication-last-success: \(state.lastSuccess ?? "-")")
        if let error = state.lastError {
            lines.append("replication-last-error: \(state.lastErrorTime ?? "?") \(error)")
        } else {
            lines.append("replication-last-error: -")
        }
        return lines
    }
}
