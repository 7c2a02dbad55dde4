import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// Windows "Previous Versions" of a share of the mount, for Samba's `vfs_shadow_copy2`:
/// `MOUNT/.snapshots/.gmt/@GMT-YYYY.MM.DD-HH.MM.SS` is the tree snapshot of that second.
///
/// SMB names a previous version by a token to the second, and `shadow_copy2` maps a token to
/// a directory name with a strftime format; snapshot names carry milliseconds and labels,
/// which no such format can produce. So the mount shows a second view of the store whose
/// names are the tokens themselves (`shadow:format` keeps its default): one per second, the
/// newest tree snapshot of that second, since a token cannot tell apart two snapshots of
/// one second and the newest is the state that second ended with.
///
/// Commit snapshots of one database (scope `files`) are left out. `shadow_copy2` offers one
/// list of snapshots for the whole share and shows each as a version of every file and
/// folder; a commit snapshot holds only its database, so every other file would show a
/// version that does not exist (Explorer lists it, then fails to open it), and a commit in
/// the same second as a tree snapshot would hide that tree snapshot. Their metadata is also
/// private to root (it names the database), and this view is open to every user.
public enum PreviousVersions {
    /// The name of the view inside `MOUNT/.snapshots` (hidden from its listing, as
    /// `.snapshots` is from the root's; no snapshot name starts with `.`).
    public static let directoryName = ".gmt"

    /// One entry of the view: its token and the snapshot it shows.
    public struct Version: Equatable, Sendable {
        public let token: String
        public let snapshot: SnapshotName
    }

    /// Whether `name` is ``directoryName``.
    @inline(__always)
    package static func isDirectory(_ name: UnsafePointer<CChar>) -> Bool { strcmp(name, directoryName) == 0 }

    /// The second (since the epoch, UTC) a token `@GMT-YYYY.MM.DD-HH.MM.SS` names, exactly
    /// in that form with a real date; nil for anything else.
    public static func second(ofToken token: String) -> Int64? {
        let bytes = Array(token.utf8)
        // "@GMT-YYYY.MM.DD-HH.MM.SS" is 24 bytes.
        guard bytes.count == 24, bytes[0..<5].elementsEqual("@GMT-".utf8),
              bytes[9] == UInt8(ascii: "."), bytes[12] == UInt8(ascii: "."), bytes[15] == UInt8(ascii: "-"),
              bytes[18] == UInt8(ascii: "."), bytes[21] == UInt8(ascii: ".") else { return nil }
        func number(_ range: Range<Int>) -> Int? { UTCTime.decimal(bytes[range]) }
        guard let year = number(5..<9), let month = number(10..<12), let day = number(13..<15),
              let hour = number(16..<18), let minute = number(19..<21), let second = number(22..<24),
              let time = UTCTime(year: year, month: month, day: day, hour: hour, minute: minute,
                                 second: second, millisecond: 0) else { return nil }
        return time.milliseconds / 1000
    }

    /// The view of `snapshots` (any order): for each second that has a tree snapshot, the
    /// newest tree snapshot of it, oldest second first. `isTree` says whether a snapshot
    /// holds the tree (not a commit snapshot of one database).
    public static func versions(of snapshots: [SnapshotName], isTree: (SnapshotName) -> Bool) -> [Version] {
        var newest: [Int64: SnapshotName] = [:]
        for name in snapshots where isTree(name) {
            let second = floorSecond(name.timeMs)
            if let kept = newest[second], kept > name { continue }
            newest[second] = name
        }
        return newest.keys.sorted().map { Version(token: newest[$0]!.time.gmtToken, snapshot: newest[$0]!) }
    }

    /// The second a time in milliseconds falls in (times are never before 1970).
    static func floorSecond(_ ms: Int64) -> Int64 { ms / 1000 }
}

/// Reads the view from the store, remembering each snapshot's scope (which never changes)
/// so that a listing reads the metadata of new snapshots only. The memory is bounded by the
/// snapshots the store holds: names no longer there are dropped at every listing.
package final class PreviousVersionsIndex: Sendable {
    /// Snapshot name → whether it holds the tree.
    private let scopes = Mutex<[String: Bool]>([:])

    package init() {}

    /// The view of the store `storeFD` (may be `O_PATH`).
    package func versions(storeFD: Int32) throws(Errno) -> [PreviousVersions.Version] {
        let catalog = SnapshotCatalog(directoryFD: storeFD)
        var names: [(SnapshotName, String)] = []
        for raw in try DirectoryNames.utf8Names(in: storeFD) {
            if let name = SnapshotName(parsing: raw) { names.append((name, raw)) }
        }
        let known = scopes.withLock { $0 }
        var current: [String: Bool] = [:]
        current.reserveCapacity(names.count)
        var present: [SnapshotName] = []
        for (name, raw) in names {
            if let tree = known[raw] {
                current[raw] = tree
                present.append(name)
                continue
            }
            // Not a directory (a stray file), or removed meanwhile: not a snapshot.
            guard let entry = catalog.find(raw) else { continue }
            // No metadata: what the name tells, as `list` shows it (a tree snapshot).
            current[raw] = entry.metadataOrReconstructed.scope == .tree
            present.append(name)
        }
        scopes.withLock { $0 = current }
        return PreviousVersions.versions(of: present) { current[$0.description] ?? false }
    }

    /// The snapshot name the token `token` shows now, or nil when it shows none.
    package func snapshot(forToken token: String, storeFD: Int32) throws(Errno) -> String? {
        guard let second = PreviousVersions.second(ofToken: token) else { return nil }
        return try versions(storeFD: storeFD).first { PreviousVersions.floorSecond($0.snapshot.timeMs) == second }?.snapshot.description
    }
}
