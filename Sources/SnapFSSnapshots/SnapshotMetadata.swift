import CLinux
import FoundationEssentials
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SystemPackage

/// What caused a snapshot.
public struct Trigger: Codable, Equatable, Sendable {
    /// The end of the detail of a commit snapshot taken once `--sqlite-min-interval` ran
    /// out with no later commit: the database's writer went quiet, so it is its final state
    /// as far as snapfs knows (replication sends it sooner, see ReplicationPlan).
    public static let afterTheInterval = ", after the interval"

    /// Whether this trigger is a commit snapshot's ``afterTheInterval``.
    public var isAfterTheInterval: Bool { kind == .sqlite && (detail?.hasSuffix(Self.afterTheInterval) ?? false) }

    /// The kinds of trigger of the metadata format.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// A write to the control file by hand (`echo snapshot > MOUNT/.snapfs-control`).
        case control
        /// `snapfs snapshot`.
        case command
        /// The mount's `--every` timer.
        case timer
        /// A SQLite transaction commit.
        case sqlite
        /// The safety snapshot `snapfs restore` takes first.
        case restore
        /// Not one of the kinds above: metadata from a later version, or metadata rebuilt
        /// for a snapshot whose own was lost.
        case unknown

        public init(from decoder: any Decoder) throws {
            let raw = try decoder.singleValueContainer().decode(String.self)
            self = Kind(rawValue: raw) ?? .unknown
        }
    }

    public var kind: Kind
    /// Free text that the trigger adds (`--trigger=KIND:DETAIL`), or nil.
    public var detail: String?
    /// The snapshot's place in a pre/post pair (`--pair=`), or nil. Carried with the trigger
    /// from the request to the metadata, where it is stored as ``SnapshotMetadata/pair``
    /// (not inside `trigger`): ``SnapshotMetadata/init(name:trigger:strategy:scope:paths:files:directories:bytes:durationMs:held:sqlite:)``
    /// moves it there.
    public var pair: SnapshotPair?

    public init(kind: Kind, detail: String? = nil, pair: SnapshotPair? = nil) {
        self.kind = kind
        self.detail = detail
        self.pair = pair
    }

    private enum CodingKeys: String, CodingKey { case kind, detail }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(Kind.self, forKey: .kind)
        detail = try c.decodeIfPresent(String.self, forKey: .detail)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        // The format shows absent values as null rather than leaving the key out.
        try c.encode(detail, forKey: .detail)
    }
}

/// The SQLite commit a snapshot was taken at.
public struct SQLiteCommitInfo: Codable, Equatable, Sendable {
    /// The database's path relative to the root of the tree.
    public var database: String
    /// `delete`, `truncate`, `persist` or `wal`.
    public var journalMode: String
    /// The commit's place in the sequence: the file change counter in the rollback modes;
    /// in WAL mode (where SQLite keeps no such counter) the number of the database's commits
    /// snapfs saw since the mount.
    public var sequence: Int64
    /// The database's size in bytes at the commit.
    public var size: Int64
    /// WAL mode: the commit frame's number in the log.
    public var walFrame: Int64?

    public init(database: String, journalMode: String, sequence: Int64, size: Int64, walFrame: Int64? = nil) {
        self.database = database
        self.journalMode = journalMode
        self.sequence = sequence
        self.size = size
        self.walFrame = walFrame
    }
}

/// The metadata of one snapshot, stored as JSON in `.snapshots/.meta/NAME.json` so that it
/// can be read without snapfs running.
public struct SnapshotMetadata: Codable, Equatable, Sendable {
    /// Whether the whole tree or only some files were taken.
    public enum Scope: String, Codable, Sendable {
        case tree
        case files
    }

    /// The version of this format.
    public static let currentFormat = 1

    public var format: Int
    /// The snapshot's name (its directory in `.snapshots`).
    public var name: String
    /// The snapshot's time, ISO 8601 in UTC with milliseconds (`2026-11-25T11:22:33.456Z`).
    public var time: String
    public var label: String?
    public var trigger: Trigger
    /// `hardlink`, `reflink`, `btrfs` or `copy`.
    public var strategy: String
    public var scope: Scope
    /// The paths taken, relative to the root, when `scope` is `files`; empty otherwise.
    public var paths: [String]
    /// Regular files, symlinks and special files in the snapshot.
    public var files: Int
    public var directories: Int
    /// The sum of the sizes of the regular files.
    public var bytes: Int64
    /// How long the snapshot took, in milliseconds.
    public var durationMs: Double
    /// How long changes through the mount were held at the freeze gate for this snapshot,
    /// in milliseconds: the whole build when it is frozen, the epoch alone when it is built
    /// in the background; nil for a database's commit snapshot, and in metadata written
    /// before it was recorded.
    public var gateMs: Double?
    /// Protected from pruning (`snapfs hold`).
    public var held: Bool
    public var sqlite: SQLiteCommitInfo?
    /// The snapshot's place in a pre/post pair (`snapfs snapshot --label L -- COMMAND`), or
    /// nil for a snapshot taken alone.
    public var pair: SnapshotPair?
    /// Not stored: set by `list --json` (whether the snapshot is on the disk for sure, see
    /// ``SnapshotEntry/durable``); nil in the metadata file.
    public var durable: Bool?

    /// Metadata for the snapshot `name`; `time` and `label` come from the name, `pair` from
    /// the trigger (completed with this snapshot's own name).
    public init(name: SnapshotName, trigger: Trigger, strategy: String, scope: Scope = .tree,
                paths: [String] = [], files: Int = 0, directories: Int = 0, bytes: Int64 = 0,
                durationMs: Double = 0, held: Bool = false, sqlite: SQLiteCommitInfo? = nil) {
        format = Self.currentFormat
        self.name = name.description
        time = name.time.iso8601
        label = name.label
        var trigger = trigger
        if var pair = trigger.pair {
            switch pair.role {
            case .pre: pair.pre = name.description
            case .post: pair.post = name.description
            }
            self.pair = pair
            trigger.pair = nil
        }
        self.trigger = trigger
        self.strategy = strategy
        self.scope = scope
        self.paths = paths
        self.files = files
        self.directories = directories
        self.bytes = bytes
        self.durationMs = durationMs
        self.held = held
        self.sqlite = sqlite
    }

    private enum CodingKeys: String, CodingKey {
        case format, name, time, label, trigger, strategy, scope, paths, files, directories, bytes, durationMs, gateMs, held, sqlite, pair, durable
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Only the name is indispensable; everything else has a neutral default so that
        // slightly damaged or older metadata still reads.
        name = try c.decode(String.self, forKey: .name)
        let parsed = SnapshotName(parsing: name)
        format = try c.decodeIfPresent(Int.self, forKey: .format) ?? Self.currentFormat
        time = try c.decodeIfPresent(String.self, forKey: .time) ?? parsed?.time.iso8601 ?? ""
        label = try c.decodeIfPresent(String.self, forKey: .label)
        trigger = try c.decodeIfPresent(Trigger.self, forKey: .trigger) ?? Trigger(kind: .unknown)
        strategy = try c.decodeIfPresent(String.self, forKey: .strategy) ?? "unknown"
        scope = try c.decodeIfPresent(Scope.self, forKey: .scope) ?? .tree
        paths = try c.decodeIfPresent([String].self, forKey: .paths) ?? []
        files = try c.decodeIfPresent(Int.self, forKey: .files) ?? 0
        directories = try c.decodeIfPresent(Int.self, forKey: .directories) ?? 0
        bytes = try c.decodeIfPresent(Int64.self, forKey: .bytes) ?? 0
        durationMs = try c.decodeIfPresent(Double.self, forKey: .durationMs) ?? 0
        gateMs = try c.decodeIfPresent(Double.self, forKey: .gateMs)
        held = try c.decodeIfPresent(Bool.self, forKey: .held) ?? false
        sqlite = try c.decodeIfPresent(SQLiteCommitInfo.self, forKey: .sqlite)
        pair = try c.decodeIfPresent(SnapshotPair.self, forKey: .pair)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(format, forKey: .format)
        try c.encode(name, forKey: .name)
        try c.encode(time, forKey: .time)
        try c.encode(label, forKey: .label)  // null when absent, as in the format
        try c.encode(trigger, forKey: .trigger)
        try c.encode(strategy, forKey: .strategy)
        try c.encode(scope, forKey: .scope)
        try c.encode(paths, forKey: .paths)
        try c.encode(files, forKey: .files)
        try c.encode(directories, forKey: .directories)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(durationMs, forKey: .durationMs)
        try c.encode(gateMs, forKey: .gateMs)  // null when not measured
        try c.encode(held, forKey: .held)
        try c.encode(sqlite, forKey: .sqlite)
        try c.encode(pair, forKey: .pair)  // null for a snapshot taken alone
        try c.encodeIfPresent(durable, forKey: .durable)
    }

    /// The name of the metadata file of the snapshot `name` inside `.snapshots/.meta`.
    public static func fileName(for name: String) -> String { name + ".json" }

    /// Whether the metadata names paths inside the tree (a database's, or a snapshot of some
    /// files): a user may not learn those from it, any more than from a directory they cannot
    /// list. Such metadata is root's (0600); `snapfs list` shows other users `?` for it.
    public var namesPaths: Bool { sqlite != nil || scope == .files }

    /// The mode of this metadata's file in `.meta` (which is 0711: reachable by name only).
    public var fileMode: mode_t { namesPaths ? 0o600 : 0o644 }

    // MARK: JSON

    /// Pretty-printed JSON with sorted keys, ending in a newline.
    public func encoded() -> [UInt8] { JSONText.encode(self) }

    /// A JSON array of several snapshots' metadata, pretty-printed with sorted keys.
    public static func encoded(_ list: [SnapshotMetadata]) -> [UInt8] { JSONText.encode(list) }

    /// Decodes metadata JSON; nil if it is not JSON of this shape.
    public static func decode(_ bytes: [UInt8]) -> SnapshotMetadata? {
        try? JSONDecoder().decode(SnapshotMetadata.self, from: Data(bytes))
    }

    // MARK: Files

    /// Writes `NAME.json` into the directory `directoryFD` (normally `.snapshots/.meta`)
    /// atomically: a temporary file is written, synced and renamed over the old one, so a
    /// reader sees either the old or the new metadata, and a crash leaves no half file.
    /// With `durable`, the directory is synced too, so the rename survives a crash.
    /// `directoryFD` may be an `O_PATH` descriptor.
    public func write(into directoryFD: Int32, durable: Bool = true) throws(Errno) {
        let finalName = Self.fileName(for: name)
        // Unique per writer, so concurrent writers never share a temporary file; the leading
        // dot keeps it from ever parsing as metadata of a snapshot.
        let temporary = ".\(finalName).tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = snapfs_openat(directoryFD, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, fileMode)
        if fd < 0 { throw Errno.current }
        _ = fchmod(fd, fileMode)  // whatever the umask left
        var closed = false
        do {
            let bytes = encoded()
            var offset = 0
            while offset < bytes.count {
                let n = try syscallRetrying {
                    bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
                }
                offset += n
            }
            if durable { try syscallRetrying { fsync(fd) } }
            closed = true
            try syscall(close(fd))
            try syscall(renameat(directoryFD, temporary, directoryFD, finalName))
        } catch {
            if !closed { close(fd) }
            unlinkat(directoryFD, temporary, 0)
            throw error
        }
        if durable {
            let dir = snapfs_openat(directoryFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            if dir < 0 { throw Errno.current }
            defer { close(dir) }
            try syscallRetrying { fsync(dir) }
        }
    }

    /// Reads `NAME.json` from the directory `directoryFD`. Throws ENOENT if there is none,
    /// EINVAL if it is not valid metadata.
    public static func read(named name: String, from directoryFD: Int32) throws(Errno) -> SnapshotMetadata {
        let fd = snapfs_openat(directoryFD, fileName(for: name), O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0)
        if fd < 0 { throw Errno.current }
        defer { close(fd) }
        guard let metadata = decode(readToEnd(fd)) else { throw Errno.invalidArgument }
        return metadata
    }
}
