import Glibc

/// What a mount does when it sees a SQLite commit (`--sqlite…` on `snapfs mount`).
public struct SQLiteOptions: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Do not look for commits.
        case off
        /// Recognise and count commits, take no snapshots.
        case detect
        /// Snapshots at commits, as `minInterval` allows.
        case snapshot
    }

    /// What a commit snapshot holds.
    public enum Scope: String, Sendable, CaseIterable {
        /// The database file alone (at its path inside the tree): the cost does not grow
        /// with the rest of the tree.
        case database
        /// The whole tree, frozen at the commit.
        case tree
    }

    /// How often a database's commits get a snapshot (`sqlite_min_interval=`). Whatever
    /// the interval, a snapshot is always taken at a commit; the commits in between are
    /// covered by the next snapshot, and once commits stop, a last snapshot of the final
    /// committed state follows at the end of the interval.
    public enum MinInterval: Sendable, Equatable {
        /// Paced per database by what its snapshots cost the application (the default):
        /// the next snapshot once `idleFactor` times the last one's cost has passed since
        /// it, and not before the strategy's floor (``SQLiteCommitDetector/useAutoFloor(ms:)``). A snapshot at
        /// every commit while commits come slower than that; never more than a third of
        /// the application's time in snapshots, however large the database.
        case auto
        /// At most one snapshot per database per this many milliseconds (0: every commit).
        case fixed(Int64)
    }

    public var mode: Mode = .snapshot
    public var scope: Scope = .database
    public var minInterval: MinInterval = .auto
    /// Globs (fnmatch, `*` crossing `/`) over database paths relative to the root; empty: all.
    public var include: [String] = []
    public var exclude: [String] = []

    public init() {}

    /// `auto`: the application's own time after a snapshot before the next, as a multiple
    /// of what that snapshot cost it (k). A snapshot then takes at most 1/(k+1) of the
    /// application's time: a third.
    public static let idleFactor: Int64 = 2

    /// `auto`: the shortest interval between two snapshots of one database until the
    /// snapshot strategy is known (``SQLiteCommitDetector/useAutoFloor(ms:)``): that of a
    /// strategy that copies the whole file.
    public static let fullCopyFloorMs: Int64 = 1000

    /// Detection off.
    public static var disabled: SQLiteOptions {
        var options = SQLiteOptions()
        options.mode = .off
        return options
    }

    /// Whether commits of the database at `path` (relative to the root) are snapshotted.
    public func covers(_ path: String) -> Bool {
        func matches(_ globs: [String]) -> Bool {
            globs.contains { glob in
                fnmatch(glob, path, 0) == 0 || fnmatch(glob, path.split(separator: "/").last.map(String.init) ?? path, 0) == 0
            }
        }
        if !include.isEmpty && !matches(include) { return false }
        return !matches(exclude)
    }
}
