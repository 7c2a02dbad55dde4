import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// `.snapshots/.meta/durable`: the name of the newest snapshot known to be durable. A
/// snapshot is durable when its name sorts at or before it (names sort by time, and
/// snapshots are published in name order); a newer one may not have reached the disk yet.
///
/// The file holds one line, the name, or `-` when no snapshot is durable yet. It is written
/// only after a `syncfs` of the backing filesystem that started after every snapshot it
/// names was published, and replaced atomically (written, synced, renamed, the directory
/// synced), so after a crash it names a snapshot whose data is on the disk.
public enum DurabilityMarker {
    public static let fileName = "durable"
    static let temporaryName = ".durable.tmp"

    /// What the marker says.
    public enum Reading: Equatable, Sendable {
        /// No marker: a store made before snapfs tracked durability, or one that was never
        /// mounted. Its snapshots count as durable.
        case absent
        /// A marker that is not one line naming a snapshot (it was changed by hand): treated
        /// as absent, so that nothing is removed on the strength of it.
        case unreadable
        /// Snapshots named up to this one are durable; nil: none is yet.
        case through(SnapshotName?)

        /// Whether the snapshot `name` is durable by this reading.
        public func covers(_ name: SnapshotName) -> Bool {
            guard case let .through(newest) = self else { return true }
            guard let newest else { return false }
            return name <= newest
        }
    }

    /// Reads the marker in the metadata directory `metadataFD` (-1: there is none, so no marker).
    public static func read(metadataFD: Int32) -> Reading {
        guard metadataFD >= 0 else { return .absent }
        let fd = snapfs_openat(metadataFD, fileName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return errno == ENOENT ? .absent : .unreadable }
        defer { close(fd) }
        let text = String(decoding: readToEnd(fd).prefix(256), as: UTF8.self)
        guard let line = text.split(separator: "\n", omittingEmptySubsequences: false).first else { return .unreadable }
        if line == "-" { return .through(nil) }
        guard let name = SnapshotName(parsing: String(line)) else { return .unreadable }
        return .through(name)
    }

    /// Replaces the marker in `metadataFD` (an open directory) with `name`, durably.
    public static func write(_ name: SnapshotName?, metadataFD: Int32) throws(Errno) {
        try replaceDurably(fileName, in: metadataFD, with: Array(((name?.description ?? "-") + "\n").utf8),
                           temporary: temporaryName)
    }
}
