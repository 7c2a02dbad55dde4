import CLinux
import FoundationEssentials
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// Replicates the snapshots of one backing store to one restic repository.
///
/// Each snapfs snapshot becomes one restic snapshot: restic runs in the snapshot's directory
/// and backs up `.`, so the files sit at the root of the restic snapshot whatever the
/// snapfs snapshot is called, and the previous one of the same kind is given as `--parent`:
/// restic then reads only the files whose size or modification time differ from the
/// parent's (snapfs snapshots keep modification times; inode numbers and change times are
/// ignored, since every snapshot has its own inodes, or shares them and so changes their
/// link counts). The snapshot's time is restic's `--time`, its name, trigger, scope, label,
/// database and hold are tags (``ReplicaSnapshot``).
///
/// Retention carries over: after sending, the mount's rules (``RetentionPolicy``, the same
/// code as the mount's own retention) are applied to the restic snapshots of this store,
/// with held snapshots kept and the `snapfs-held` tag brought up to date, and `restic
/// forget` removes the others (`restic prune` frees their data when asked).
///
/// One run at a time per store and repository: a lock file beside the record, held with
/// `flock` by the run and passed on to its `restic backup` children, so that a run killed
/// while restic goes on still holds it until restic ends.
public final class Replicator: Sendable {
    /// The backing directory (its canonical path: restic records it in the snapshots' paths).
    public let backing: String
    public let repository: ResticRepository
    /// The commit interval (see ``ReplicationPlan``).
    public let commitIntervalMs: Int64
    /// The rules mirrored on the repository; empty: nothing is forgotten.
    public let retention: RetentionPolicy

    /// The default commit interval: one commit snapshot per database every 5 s at most.
    public static let defaultCommitIntervalMs: Int64 = 5000

    public init(backing: String, repository: ResticRepository, commitIntervalMs: Int64 = Replicator.defaultCommitIntervalMs,
                retention: RetentionPolicy = RetentionPolicy()) {
        self.backing = backing
        self.repository = repository
        self.commitIntervalMs = commitIntervalMs
        self.retention = retention
    }

    /// What earlier runs of this replicator learnt: the repository's ID (asked once), whether
    /// a restic of theirs may have left a lock in the repository (at the start, a killed run
    /// of another process may have), and when the retention rules were last applied.
    private struct Memory {
        var repositoryID: String?
        var mayHaveLeftLock = true
        var lastRetentionMs: Int64?
    }
    private let memory = Mutex(Memory())

    /// The least time between two applications of the retention rules (each lists the
    /// repository's snapshots, a restic start of its own) in a replicator that runs again
    /// and again (the mount's).
    static let retentionSpacingMs: Int64 = 10_000

    /// What restic's `backup --json` summary says of one snapshot sent.
    public struct BackupSummary: Codable, Equatable, Sendable {
        public var snapshotID: String
        public var filesNew: Int
        public var filesChanged: Int
        public var filesUnmodified: Int
        public var dirsNew: Int
        public var dirsChanged: Int
        public var dirsUnmodified: Int
        /// New file data chunks and new directory listings uploaded.
        public var dataBlobs: Int
        public var treeBlobs: Int
        /// Bytes added to the repository (before compression): new file data and the
        /// directory listings that changed.
        public var dataAdded: Int64
        public var totalFilesProcessed: Int
        public var totalBytesProcessed: Int64
        public var totalDuration: Double

        enum CodingKeys: String, CodingKey {
            case snapshotID = "snapshot_id", filesNew = "files_new", filesChanged = "files_changed",
                 filesUnmodified = "files_unmodified", dirsNew = "dirs_new", dirsChanged = "dirs_changed",
                 dirsUnmodified = "dirs_unmodified", dataBlobs = "data_blobs", treeBlobs = "tree_blobs", dataAdded = "data_added",
                 totalFilesProcessed = "total_files_processed", totalBytesProcessed = "total_bytes_processed",
                 totalDuration = "total_duration"
        }
    }

    /// One snapshot sent.
    public struct Sent: Codable, Equatable, Sendable {
        public var name: String
        /// restic's ID of the new snapshot.
        public var id: String
        /// restic's ID of the parent it was compared with, if any.
        public var parent: String?
        /// Commit snapshots it stands for, passed over.
        public var passedOver: [String]
        public var summary: BackupSummary
    }

    /// What a run did.
    public struct Report: Sendable {
        public var repositoryID: String
        public var sent: [Sent] = []
        /// Snapshots already in the repository before the run (found there, recorded).
        public var alreadyThere = 0
        /// Commit snapshots passed over in this run.
        public var passedOver = 0
        /// Every name replicated or passed over, after the run.
        public var done: Set<String> = []
        /// When held back commit snapshots are due (ms since the epoch), if any.
        public var nextDueMs: Int64?
        /// Names of the restic snapshots forgotten by the retention rules.
        public var forgotten: [String] = []
        /// restic snapshots whose `snapfs-held` tag was added or removed.
        public var retagged = 0
        /// `restic prune` ran.
        public var pruned = false
    }

    /// Sends every snapshot not yet in the repository, oldest first; `progress` is called after
    /// each one is recorded. The repository must exist (``ResticRepository/initialize()``).
    ///
    /// With `holdingOpenAt` (the daemon, which comes back), a commit snapshot whose interval
    /// has not ended at that time is held back (``Report/nextDueMs`` says until when), so that
    /// each interval gets one; without (a run by hand), the newest is sent at once. A run
    /// that `cancelled` says was stopped on purpose records no error.
    ///
    /// With `prune`, `restic prune` runs after the retention rules forgot something (or
    /// always, with `.always`).
    /// With `confirmIdle` (a run by hand), a run that trusted its record and had nothing to
    /// send still opens the repository (`restic cat config`), so that a wrong password or
    /// location is reported, not passed over.
    public func run(holdingOpenAt nowMs: Int64? = nil, prune: PruneWhen = .never, confirmIdle: Bool = false,
                    progress: (Sent) -> Void = { _ in }, cancelled: () -> Bool = { false }) throws(ReplicationError) -> Report {
        let snapshotsFD = try openSnapshots()
        defer { close(snapshotsFD) }
        // Each restic start costs about half a second (it derives the key from the password):
        // a run that can trust its record starts restic only to send.
        if let found = trustedRecord(snapshotsFD: snapshotsFD, prune: prune) {
            var trusted = found.record
            let done = trusted.done
            let entries = found.entries
            if confirmIdle && entries.allSatisfy({ done.contains($0.name.description) }) {
                // Before anything is written: a wrong password fails here, and another
                // repository at that location takes the full run below.
                let id = try repository.repositoryID()
                memory.withLock { $0.repositoryID = id }
                if id != trusted.repositoryID {
                    trusted = ReplicationRecord.read(snapshotsFD: snapshotsFD, repositoryID: id)
                        ?? ReplicationRecord(repository: repository.shown, repositoryID: id)
                    return try run(snapshotsFD: snapshotsFD, record: trusted, listing: true, holdingOpenAt: nowMs, prune: prune,
                                   progress: progress, cancelled: cancelled)
                }
            }
            do {
                return try run(snapshotsFD: snapshotsFD, record: trusted, listing: false, holdingOpenAt: nowMs, prune: prune,
                               progress: progress, cancelled: cancelled)
            } catch where !cancelled() && Self.trustMisplaced(error) {
                // The record was wrong after all: once more, asking the repository.
                memory.withLock { $0.repositoryID = nil; $0.mayHaveLeftLock = true }
            }
        }
        let repositoryID: String
        if let known = memory.withLock({ $0.repositoryID }) {
            repositoryID = known
        } else {
            repositoryID = try repository.repositoryID()
            memory.withLock { $0.repositoryID = repositoryID }
        }
        let record = ReplicationRecord.read(snapshotsFD: snapshotsFD, repositoryID: repositoryID)
            ?? ReplicationRecord(repository: repository.shown, repositoryID: repositoryID)
        return try run(snapshotsFD: snapshotsFD, record: record, listing: true, holdingOpenAt: nowMs, prune: prune,
                       progress: progress, cancelled: cancelled)
    }

    /// The record a run may go by without asking the repository what it holds: the one of
    /// this location (or of the ID known from an earlier run), left by a run that ended
    /// cleanly, whose held tags agree with the holds now, when the retention rules have
    /// nothing to forget (or were applied less than ``retentionSpacingMs`` ago).
    /// nil: the run lists the repository's snapshots first. With the record, the snapshots of
    /// the store it was checked against.
    private func trustedRecord(snapshotsFD: Int32, prune: PruneWhen) -> (record: ReplicationRecord, entries: [SnapshotEntry])? {
        if prune == .always { return nil }
        let knownID = memory.withLock { $0.repositoryID }
        let found = knownID.flatMap { ReplicationRecord.read(snapshotsFD: snapshotsFD, repositoryID: $0) }
            ?? ReplicationRecord.forLocation(repository.shown, snapshotsFD: snapshotsFD)
        guard let record = found, record.inFlight == nil, let heldThere = record.heldThere,
              !record.replicated.isEmpty else { return nil }
        guard let entries = try? SnapshotCatalog(directoryFD: snapshotsFD).list() else { return nil }
        let heldHere = Set(entries.filter(\.held).map(\.name.description)).intersection(record.replicated.keys)
        guard heldHere == Set(heldThere) else { return nil }
        if retentionOwed(record: record, entries: entries, replicas: replicas(of: entries, in: record)) && !retentionSpaced() {
            return nil
        }
        return (record, entries)
    }

    /// The replicated snapshots whose restic snapshot in `replicas` carries the held tag.
    static func heldThere(_ replicas: [ReplicaSnapshot], record: ReplicationRecord) -> [String] {
        replicas.filter(\.held).compactMap { $0.name?.description }.filter { record.replicated[$0] != nil }
    }

    /// Whether a failure of a run that trusted its record may come from that trust: the
    /// parent it named is not in the repository (forgotten elsewhere, or another repository
    /// at the same location), or a lock a killed restic left stops it. Anything else (the
    /// repository unreachable, restic killed) is the run's failure, reported as it is.
    static func trustMisplaced(_ error: ReplicationError) -> Bool {
        error.message.contains("no matching ID found") || error.message.contains("locked by another restic")
    }

    /// Whether the retention rules may have something to forget in the repository: they
    /// forget some of the snapshots the record holds, or a replicated snapshot was deleted
    /// here since the rules were last applied (the repository may still hold it), or the
    /// record does not say.
    private func retentionOwed(record: ReplicationRecord, entries: [SnapshotEntry], replicas: [ReplicaSnapshot]) -> Bool {
        guard !retention.isEmpty else { return false }
        if record.retentionOwed ?? true { return true }
        let local = Set(entries.map(\.name.description))
        if record.replicated.keys.contains(where: { !local.contains($0) }) { return true }
        return !Self.toForget(replicas, retention: retention).isEmpty
    }

    /// Whether the rules were applied by this replicator less than ``retentionSpacingMs`` ago.
    private func retentionSpaced() -> Bool {
        guard let last = memory.withLock({ $0.lastRetentionMs }) else { return false }
        return SnapshotName.nowMs() - last < Self.retentionSpacingMs
    }

    /// The restic snapshots the record says the repository holds of `entries`, with the tags
    /// they were sent with.
    private func replicas(of entries: [SnapshotEntry], in record: ReplicationRecord) -> [ReplicaSnapshot] {
        let prefix = backing + "/" + SnapshotCatalog.directoryName + "/"
        return entries.compactMap { entry in
            guard let id = record.replicated[entry.name.description] else { return nil }
            return ReplicaSnapshot(id: id, paths: [prefix + entry.name.description],
                                   tags: ReplicaSnapshot.tags(for: entry.metadataOrReconstructed))
        }
    }

    /// One run with `record`; `listing`: the repository's snapshots are listed first (and
    /// restic's stale locks removed at the first run of the process), else the record
    /// stands for them.
    private func run(snapshotsFD: Int32, record found: ReplicationRecord, listing: Bool, holdingOpenAt nowMs: Int64?,
                     prune: PruneWhen, progress: (Sent) -> Void, cancelled: () -> Bool) throws(ReplicationError) -> Report {
        var record = found
        let lock = try lockRun(snapshotsFD: snapshotsFD, repositoryID: record.repositoryID)
        defer { close(lock) }
        if listing && memory.withLock({ $0.mayHaveLeftLock }) {
            // A restic killed in an earlier run left its lock in the repository, which would
            // stop `restic check` and `prune`: `unlock` removes the locks of processes that are
            // gone (and those older than 30 minutes), never a live one.
            _ = try? repository.run(["unlock"])
            memory.withLock { $0.mayHaveLeftLock = false }
        }
        if !listing, let current = ReplicationRecord.read(snapshotsFD: snapshotsFD, repositoryID: record.repositoryID) {
            // Another run may have written it while this one waited for the lock.
            record = current
            guard record.inFlight == nil else {
                throw ReplicationError(.failed, "the replication record of \(repository.shown) names a snapshot being sent")
            }
        }
        record.repository = repository.shown
        do {
            var report = try send(snapshotsFD: snapshotsFD, lock: lock, record: &record, listing: listing, holdingOpenAt: nowMs,
                                  prune: prune, progress: progress)
            record.lastSuccess = UTCTime(milliseconds: SnapshotName.nowMs())?.iso8601
            record.lastError = nil
            record.lastErrorTime = nil
            try? record.write(snapshotsFD: snapshotsFD)
            report.done = record.done
            return report
        } catch {
            // A restic that failed or was killed may have left its lock.
            _ = try? repository.run(["unlock"])
            if !cancelled() {
                record.lastError = error.message
                record.lastErrorTime = UTCTime(milliseconds: SnapshotName.nowMs())?.iso8601
                try? record.write(snapshotsFD: snapshotsFD)
            }
            throw error
        }
    }

    /// When a run ends with `restic prune`.
    public enum PruneWhen: Sendable {
        case never
        case ifForgotten
        case always
    }

    private func send(snapshotsFD: Int32, lock: Int32, record: inout ReplicationRecord, listing: Bool, holdingOpenAt nowMs: Int64?,
                      prune: PruneWhen, progress: (Sent) -> Void) throws(ReplicationError) -> Report {
        var report = Report(repositoryID: record.repositoryID)
        // What the repository holds of this store: restic recorded the directory it ran in.
        let prefix = backing + "/" + SnapshotCatalog.directoryName + "/"
        let mine = { (replica: ReplicaSnapshot) in replica.paths == [prefix + (replica.name?.description ?? "")] }
        let entries: [SnapshotEntry]
        do {
            entries = try SnapshotCatalog(directoryFD: snapshotsFD).list()
        } catch {
            throw ReplicationError(.failed, "cannot list the snapshots of \(backing): \(error)")
        }
        let localNames = Set(entries.map(\.name.description))
        var replicas: [ReplicaSnapshot]
        if listing {
            replicas = try repository.snapshots().filter(mine)
            for replica in replicas {
                guard let name = replica.name?.description, localNames.contains(name), record.replicated[name] == nil else { continue }
                record.replicated[name] = replica.shortID
                report.alreadyThere += 1
            }
            record.heldThere = Self.heldThere(replicas, record: record)
            // Whatever a killed run was sending is in the listing, or is sent again below.
            record.inFlight = nil
        } else {
            // The record stands for the listing: the snapshots of this store it holds, with
            // the tags they were sent with (their holds agree, see trustedRecord).
            replicas = self.replicas(of: entries, in: record)
        }
        var owed = !listing && retentionOwed(record: record, entries: entries, replicas: replicas)
        record.keepOnly(localNames)
        var lastSentCommitMs: [String: Int64] = [:]
        for replica in replicas {
            guard let database = replica.database, let name = replica.name else { continue }
            lastSentCommitMs[database] = max(lastSentCommitMs[database] ?? 0, name.timeMs)
        }
        let plan = ReplicationPlan(local: entries.map(ReplicationPlan.Candidate.init),
                                   done: record.done.union(replicas.compactMap { $0.name?.description }),
                                   lastSentCommitMs: lastSentCommitMs, intervalMs: commitIntervalMs, holdingOpenAt: nowMs)
        report.nextDueMs = plan.nextDueMs
        let byName = Dictionary(entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for step in plan.steps {
            guard let entry = byName[step.name] else { continue }
            let metadata = entry.metadataOrReconstructed
            let parent = Self.parent(for: metadata, among: replicas)
            // Named in the record while restic sends it: a run killed meanwhile is seen.
            record.inFlight = metadata.name
            do {
                try record.write(snapshotsFD: snapshotsFD)
            } catch {
                throw ReplicationError(.failed, "cannot write the replication record in \(backing): \(error)")
            }
            guard let summary = try backup(entry: entry, metadata: metadata, parent: parent, snapshotsFD: snapshotsFD,
                                           lock: lock) else {
                record.inFlight = nil
                continue  // deleted meanwhile
            }
            record.inFlight = nil
            record.replicated[metadata.name] = summary.snapshotID
            if metadata.held { record.heldThere = (record.heldThere ?? []) + [metadata.name] }
            record.skipped += step.passesOver.map(\.description)
            do {
                try record.write(snapshotsFD: snapshotsFD)
            } catch {
                throw ReplicationError(.failed, "cannot write the replication record in \(backing): \(error)")
            }
            var replica = ReplicaSnapshot(id: summary.snapshotID, paths: [prefix + metadata.name], tags: ReplicaSnapshot.tags(for: metadata))
            replica.parent = parent?.id
            replicas.append(replica)
            let sent = Sent(name: metadata.name, id: summary.snapshotID, parent: parent?.shortID,
                            passedOver: step.passesOver.map(\.description), summary: summary)
            report.sent.append(sent)
            report.passedOver += step.passesOver.count
            progress(sent)
        }
        if listing {
            try carryRetentionOver(entries: entries, replicas: &replicas, record: &record, report: &report, prune: prune, mine: mine)
            memory.withLock { $0.lastRetentionMs = SnapshotName.nowMs() }
            record.retentionOwed = false
        } else if !retention.isEmpty {
            owed = owed || !Self.toForget(replicas, retention: retention).isEmpty
            record.retentionOwed = owed
            if owed, let last = memory.withLock({ $0.lastRetentionMs }) {
                // The rules are applied by the first run after the spacing: come back then.
                let due = last + Self.retentionSpacingMs
                report.nextDueMs = min(report.nextDueMs ?? due, due)
            }
        }
        return report
    }

    /// Brings the `snapfs-held` tags up to date with the snapshots held now, applies the
    /// retention rules to this store's restic snapshots, forgets the others, and prunes.
    private func carryRetentionOver(entries: [SnapshotEntry], replicas: inout [ReplicaSnapshot], record: inout ReplicationRecord,
                                    report: inout Report, prune: PruneWhen,
                                    mine: (ReplicaSnapshot) -> Bool) throws(ReplicationError) {
        let held = Dictionary(entries.map { ($0.name.description, $0.held) }, uniquingKeysWith: { first, _ in first })
        let add = replicas.filter { held[$0.name!.description] == true && !$0.held }.map(\.id)
        let remove = replicas.filter { held[$0.name!.description] == false && $0.held }.map(\.id)
        for (flag, ids) in [("--add", add), ("--remove", remove)] where !ids.isEmpty {
            for chunk in ids.chunked(100) { try repository.checked(["tag", flag, ReplicaSnapshot.baseTag + "-held"] + chunk) }
        }
        if !add.isEmpty || !remove.isEmpty {
            // restic gives a snapshot whose tags changed a new ID.
            replicas = try repository.snapshots().filter(mine)
            for replica in replicas where record.replicated[replica.name!.description] != nil {
                record.replicated[replica.name!.description] = replica.shortID
            }
            report.retagged = add.count + remove.count
        }
        record.heldThere = Self.heldThere(replicas, record: record)
        let forget = Self.toForget(replicas, retention: retention)
        for chunk in forget.map(\.id).chunked(100) { try repository.checked(["forget"] + chunk) }
        report.forgotten = forget.map { $0.name!.description }
        if prune == .always || (prune == .ifForgotten && !forget.isEmpty) {
            try repository.checked(["prune"])
            report.pruned = true
        }
    }

    /// The restic snapshots the retention rules remove: the rules of the mount, applied as
    /// the mount applies them, a snapshot held if its tag says so.
    static func toForget(_ replicas: [ReplicaSnapshot], retention: RetentionPolicy) -> [ReplicaSnapshot] {
        guard !retention.isEmpty else { return [] }
        let input = replicas.map { ($0.id, $0.name!.timeMs, $0.held, $0.database) }
        let remove = Set(retention.prune(grouped: input).remove)
        return replicas.filter { remove.contains($0.id) }
    }

    /// The parent restic compares with: the newest replica older than the snapshot of the same
    /// kind (a tree snapshot's; for a commit snapshot, one of the same database, else a tree
    /// snapshot's).
    static func parent(for metadata: SnapshotMetadata, among replicas: [ReplicaSnapshot]) -> ReplicaSnapshot? {
        guard let name = SnapshotName(parsing: metadata.name) else { return nil }
        let older = replicas.filter { ($0.name.map { $0 < name }) ?? false }.sorted { $0.name! > $1.name! }
        if metadata.scope == .files {
            if let database = metadata.sqlite?.database, let same = older.first(where: { $0.database == database }) {
                return same
            }
        }
        return older.first { $0.scope == .tree }
    }

    /// Runs `restic backup .` in the snapshot's directory. Returns nil if the snapshot is gone.
    private func backup(entry: SnapshotEntry, metadata: SnapshotMetadata, parent: ReplicaSnapshot?, snapshotsFD: Int32,
                        lock: Int32) throws(ReplicationError) -> BackupSummary? {
        let name = entry.name.description
        let dir = snapfs_openat(snapshotsFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        if dir < 0 {
            if errno == ENOENT { return nil }
            throw ReplicationError(.failed, "cannot open snapshot \(name): \(Errno.current)")
        }
        defer { close(dir) }
        var arguments = ["backup", ".", "--json", "--ignore-inode", "--ignore-ctime", "--time", entry.name.time.readable]
        for tag in ReplicaSnapshot.tags(for: metadata) { arguments += ["--tag", tag] }
        if let parent { arguments += ["--parent", parent.id] }
        let outcome = try repository.run(arguments, directoryFD: dir, lastLineOnly: true, inheritedFD: lock)
        let summary = try? JSONDecoder().decode(BackupSummary.self, from: Data(outcome.output))
        if outcome.status == 3, let summary {
            // Some files could not be read: restic made an incomplete snapshot, which must not
            // stand for this one.
            _ = try? repository.run(["forget", summary.snapshotID])
            throw ReplicationError(.failed, "restic could not read every file of snapshot \(name) (\(Self.lastLine(outcome.errorText))); nothing was recorded")
        }
        guard outcome.status == 0 else {
            throw ReplicationError.restic(status: outcome.status, errorText: outcome.errorText, repository: repository.shown)
        }
        guard let summary else {
            throw ReplicationError(.failed, "restic backed up snapshot \(name) but printed no summary")
        }
        return summary
    }

    private static func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map { Redaction.userinfo(String($0)) } ?? ""
    }

    private func openSnapshots() throws(ReplicationError) -> Int32 {
        let path = backing + "/" + SnapshotCatalog.directoryName
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            throw ReplicationError(.failed, "cannot open \(path): \(Errno.current)")
        }
        return fd
    }

    /// Takes the run's lock: `.snapshots/.meta/replication/REPOSITORY-ID.lock`, passed on to
    /// the `restic backup` children so that they hold it too. Waits for a run in progress.
    private func lockRun(snapshotsFD: Int32, repositoryID: String) throws(ReplicationError) -> Int32 {
        do throws(Errno) {
            let dir = try ReplicationRecord.openDirectory(snapshotsFD: snapshotsFD, create: true)
            defer { close(dir) }
            let fd = try syscall(snapfs_openat(dir, repositoryID + ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600))
            while flock(fd, LOCK_EX) != 0 {
                if errno != EINTR {
                    let error = Errno.current
                    close(fd)
                    throw error
                }
            }
            return fd
        } catch {
            throw ReplicationError(.failed, "cannot lock the replication record in \(backing): \(error)")
        }
    }
}

/// Where and how a mount replicates (`-o replicate_to=REPO`, `replicate_password_file=F`,
/// `replicate_commit_interval=D`).
public struct ReplicationSettings: Sendable, Equatable {
    /// The repository's location.
    public var location: String
    /// An absolute path, or nil for the daemon's environment's `RESTIC_PASSWORD*`.
    public var passwordFile: String?
    public var commitIntervalMs: Int64 = Replicator.defaultCommitIntervalMs

    public init(location: String, passwordFile: String? = nil) {
        self.location = location
        self.passwordFile = passwordFile
    }
}

extension Array {
    /// The elements in runs of at most `size` (command lines of bounded length).
    func chunked(_ size: Int) -> [[Element]] {
        stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}
