import Glibc

/// What a mount does when it sees a SQLite commit (`--sqlite…` on `snapfs mount`).
public struct SQLiteOptions: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Do not look for commits.
        case off
        /// Recognise and count commits, take no snapshots.
        case detect
        /// A snapshot at commits (every one, or as `minIntervalMs` allows).
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

    public var mode: Mode = .snapshot
    public var scope: Scope = .database
    /// At most one snapshot per database per interval (0: every commit). Commits in
    /// between are covered by the next snapshot, and once commits stop, a last snapshot
    /// of the final committed state follows at the end of the interval.
    public var minIntervalMs: Int64 = 0
    /// Globs (fnmatch, `*` crossing `/`) over database paths relative to the root; empty: all.
    public var include: [String] = []
    public var exclude: [String] = []

    public init() {}

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
