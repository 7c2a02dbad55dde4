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
}
