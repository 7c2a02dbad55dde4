/// How a snapshot tree is made from the live tree.
public enum SnapshotStrategy: String, Sendable, CaseIterable {
    /// A read-only btrfs subvolume snapshot of the backing subvolume (constant time).
    case btrfs
    /// A new tree whose regular files share their extents with the live files (FICLONE).
    case reflink
    /// A new tree whose regular files are hard links to the live files.
    case hardlink
    /// A new tree with every regular file's content copied.
    case copy

    /// The `TreeCloner` method that makes this strategy's trees; nil for `btrfs`, which
    /// snapshots the subvolume instead.
    public var cloneMethod: CloneMethod? {
        switch self {
        case .btrfs: nil
        case .reflink: .reflink
        case .hardlink: .hardlink
        case .copy: .copy
        }
    }

    /// `sqlite_min_interval=auto`: the shortest interval between two snapshots of one database, by strategy.
    /// A snapshot costs the application more than its build at the commit: the metadata it
    /// adds, which the application's next `fsync` commits with its own; the removal of the
    /// oldest snapshot once retention's bound is reached; write-back. None of that is
    /// attributable to one snapshot, so the floor bounds it (docs/performance.md has the
    /// measurements). Where a snapshot clones the file, a tenth of a second: at 3 ms
    /// (three times a clone's cost) the busy benchmark ran at 0.1–0.4 × detection only,
    /// at 100 ms close to it. Where it copies the whole file (`copy`, and `hardlink`, whose
    /// live file is copied up at the next write after each snapshot), a second, as
    /// Litestream's default sync interval is a second.
    public var commitSnapshotFloorMs: Int64 {
        switch self {
        case .reflink, .btrfs: 100
        case .hardlink, .copy: 1000
        }
    }
}
