import CLinux
import FoundationEssentials
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import SystemPackage

/// What was replicated from one backing store to one repository, kept in the store at
/// `.snapshots/.meta/replication/REPOSITORY-ID.json` so that a later run, or a restarted
/// daemon, knows where it is without asking the repository.
///
/// Written atomically after each snapshot sent (a temporary file, synced, renamed over the
/// old record, the directory synced): a run killed at any point leaves the record of the
/// last snapshot that restic finished, or the one before. The repository itself stays the
/// authority on what it holds: each run first adds to the record what the repository has
/// that the record lacks (a snapshot whose upload finished just before a kill).
public struct ReplicationRecord: Codable, Equatable, Sendable {
    /// The directory of records inside `.snapshots/.meta`.
    public static let directoryName = "replication"
    public static let currentFormat = 1

    public var format = ReplicationRecord.currentFormat
    /// The repository's location as shown (no credentials).
    public var repository: String
    /// restic's ID of the repository.
    public var repositoryID: String
    /// snapfs snapshot name → restic snapshot ID, for the snapshots of the store that are in
    /// the repository.
    public var replicated: [String: String] = [:]
    /// Commit snapshots passed over (a later one of the same interval stands for them).
    public var skipped: [String] = []
    /// The snapshot a run was sending when it wrote the record last (set before `restic
    /// backup` starts, cleared once its result is recorded): a record that still names one
    /// comes from a run that was killed or failed, so the next run asks the repository what
    /// it holds (and removes restic's stale locks) instead of trusting the record.
    public var inFlight: String?
    /// The replicated snapshots whose restic snapshot carries the `snapfs-held` tag, as far
    /// as this store knows (nil: not known, as in records of earlier versions).
    public var heldThere: [String]?
    /// Whether the retention rules may have something to forget in the repository that the
    /// last run did not apply (nil: not known).
    public var retentionOwed: Bool?
    /// When the last run ended without an error, ISO 8601 UTC.
    public var lastSuccess: String?
    /// The last run's error, if it failed, and when.
    public var lastError: String?
    public var lastErrorTime: String?

    public init(repository: String, repositoryID: String) {
        self.repository = repository
        self.repositoryID = repositoryID
    }

    /// Names replicated or passed over.
    public var done: Set<String> { Set(replicated.keys).union(skipped) }

    /// Drops what names no snapshot of the store any more (deleted by retention or by hand):
    /// the record stays as large as the store.
    public mutating func keepOnly(_ names: Set<String>) {
        replicated = replicated.filter { names.contains($0.key) }
        skipped = skipped.filter { names.contains($0) }
        heldThere = heldThere?.filter { names.contains($0) }
    }

    /// The record of the repository at `shown` in the store, if exactly one record names
    /// that location: the repository's ID without asking restic (``Replicator`` checks it
    /// by using it: a `--parent` from another repository fails the backup).
    public static func forLocation(_ shown: String, snapshotsFD: Int32) -> ReplicationRecord? {
        let matching = all(snapshotsFD: snapshotsFD).filter { $0.repository == shown }
        return matching.count == 1 ? matching[0] : nil
    }

    public static func fileName(repositoryID: String) -> String { repositoryID + ".json" }

    /// The record for `repositoryID` in the store whose `.snapshots` is `snapshotsFD`, or nil
    /// if there is none (or it does not read as one).
    public static func read(snapshotsFD: Int32, repositoryID: String) -> ReplicationRecord? {
        let path = SnapshotCatalog.metadataDirectoryName + "/" + directoryName + "/" + fileName(repositoryID: repositoryID)
        let fd = snapfs_openat(snapshotsFD, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let record = try? JSONDecoder().decode(ReplicationRecord.self, from: Data(readToEnd(fd))),
              record.repositoryID == repositoryID else { return nil }
        return record
    }

    /// Every record of the store (one per repository it replicates to).
    public static func all(snapshotsFD: Int32) -> [ReplicationRecord] {
        guard let dir = try? openDirectory(snapshotsFD: snapshotsFD, create: false) else { return [] }
        defer { close(dir) }
        let names = (try? DirectoryNames.utf8Names(in: dir)) ?? []
        return names.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted().compactMap {
            read(snapshotsFD: snapshotsFD, repositoryID: String($0.dropLast(5)))
        }
    }

    /// Writes the record atomically and durably.
    public func write(snapshotsFD: Int32) throws(Errno) {
        let dir = try Self.openDirectory(snapshotsFD: snapshotsFD, create: true)
        defer { close(dir) }
        let name = Self.fileName(repositoryID: repositoryID)
        try replaceDurably(name, in: dir, with: JSONText.encode(self),
                           temporary: ".\(name).tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
    }

    /// `.snapshots/.meta/replication` (private to root, 0700), made if asked.
    public static func openDirectory(snapshotsFD: Int32, create: Bool) throws(Errno) -> Int32 {
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        if create {
            if mkdirat(snapshotsFD, SnapshotCatalog.metadataDirectoryName, SnapshotCatalog.metadataDirectoryMode) != 0 && errno != EEXIST {
                throw .current
            }
        }
        let meta = try syscall(snapfs_openat(snapshotsFD, SnapshotCatalog.metadataDirectoryName, flags, 0))
        defer { close(meta) }
        if create && mkdirat(meta, directoryName, 0o700) != 0 && errno != EEXIST { throw .current }
        return try syscall(snapfs_openat(meta, directoryName, flags, 0))
    }
}
