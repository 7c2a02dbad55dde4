import CLinux
import Glibc
import SystemPackage

/// Finds out which snapshot strategy a backing filesystem supports.
public enum StrategyProbe {
    /// Whether files in `dir` can be reflinked: FICLONE between two temporary files made
    /// there (unnamed `O_TMPFILE` files where possible, else named ones unlinked at once).
    public static func supportsReflink(in dir: Int32) -> Bool {
        guard let source = temporaryFile(in: dir) else { return false }
        defer { close(source) }
        guard let target = temporaryFile(in: dir) else { return false }
        defer { close(target) }
        // Some filesystems accept cloning an empty file without supporting reflinks at all.
        var block = [UInt8](repeating: 0x5A, count: 4096)
        guard pwrite(source, &block, block.count, 0) == block.count else { return false }
        return snapfs_ficlone(target, source) == 0
    }

    /// `btrfs` if the backing root is a btrfs subvolume root, else `reflink` if `scratch`
    /// (a directory on the same filesystem, such as the daemon's work directory) supports
    /// reflinks, else `hardlink`. Never `copy`, which is only taken when forced.
    public static func best(for backingRoot: Int32, scratch: Int32) -> SnapshotStrategy {
        if BtrfsSubvolume.isSubvolumeRoot(backingRoot) { return .btrfs }
        if supportsReflink(in: scratch) { return .reflink }
        return .hardlink
    }

    private static func temporaryFile(in dir: Int32) -> Int32? {
        let fd = snapfs_openat(dir, ".", SNAPFS_O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if fd >= 0 { return fd }
        for attempt in 0..<100 {
            let name = ".snapfs-reflink-probe-\(getpid())-\(attempt)"
            let fd = snapfs_openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd >= 0 {
                unlinkat(dir, name, 0)
                return fd
            }
            if errno != EEXIST { return nil }
        }
        return nil
    }
}
