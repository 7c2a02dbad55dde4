import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// btrfs subvolume snapshots: the `btrfs` strategy, constant time whatever the tree size.
public enum BtrfsSubvolume {
    /// Whether `fd` is on a btrfs filesystem.
    public static func isOnBtrfs(_ fd: Int32) -> Bool {
        let type = snapfs_filesystem_type(fd)
        return type != -1 && UInt32(truncatingIfNeeded: type) == UInt32(truncatingIfNeeded: SNAPFS_BTRFS_SUPER_MAGIC)
    }

    /// Whether the directory `fd` is the root of a btrfs subvolume (which alone can be snapshotted).
    public static func isSubvolumeRoot(_ fd: Int32) -> Bool {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & 0o170000 == 0o040000 else { return false }
        return status.st_ino == SNAPFS_BTRFS_FIRST_FREE_OBJECTID && isOnBtrfs(fd)
    }

    /// Snapshots the subvolume `source` (its root directory's descriptor) as the new
    /// subvolume `name` in the directory `parent`. Subvolumes nested in `source` appear in
    /// the snapshot as empty directories.
    public static func snapshot(source: Int32, into parent: Int32, name: String, readOnly: Bool) throws(Errno) {
        try name.withCName { (name) throws(Errno) in
            _ = try syscall(snapfs_btrfs_snapshot(parent, source, name, readOnly ? 1 : 0))
        }
    }

    /// Creates the empty subvolume `name` in the directory `parent`.
    public static func create(in parent: Int32, name: String) throws(Errno) {
        try name.withCName { (name) throws(Errno) in
            _ = try syscall(snapfs_btrfs_subvolume_create(parent, name))
        }
    }

    /// Makes the subvolume whose root directory is `fd` read-only.
    public static func setReadOnly(_ fd: Int32) throws(Errno) {
        var flags: UInt64 = 0
        try syscall(snapfs_btrfs_get_subvolume_flags(fd, &flags))
        if flags & SNAPFS_BTRFS_SUBVOL_RDONLY != 0 { return }
        try syscall(snapfs_btrfs_set_subvolume_flags(fd, flags | SNAPFS_BTRFS_SUBVOL_RDONLY))
    }

    /// Deletes the subvolume `name` of `parent` with everything in it, read-only or not,
    /// subvolumes nested in it included.
    public static func delete(parent: Int32, name: String) throws(Errno) {
        try name.withCName { (name) throws(Errno) in try delete(parent: parent, entry: name) }
    }

    static func delete(parent: Int32, entry name: UnsafePointer<CChar>) throws(Errno) {
        if snapfs_btrfs_destroy(parent, name) == 0 { return }
        // The kernel refuses a subvolume that holds other subvolumes: make it writable,
        // empty it (which destroys those), then destroy it.
        guard errno == ENOTEMPTY else { throw .current }
        let cursor = try DirectoryCursor(at: parent, Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name))))
        var flags: UInt64 = 0
        if snapfs_btrfs_get_subvolume_flags(cursor.fd, &flags) == 0 && flags & SNAPFS_BTRFS_SUBVOL_RDONLY != 0 {
            try syscall(snapfs_btrfs_set_subvolume_flags(cursor.fd, flags & ~SNAPFS_BTRFS_SUBVOL_RDONLY))
        }
        try TreeRemover.removeContents(of: cursor, onBtrfs: true)
        try syscall(snapfs_btrfs_destroy(parent, name))
    }

    /// A read-only snapshot of the subvolume `source` as `name` in `parent`, without the
    /// top-level entries `excludeAtTop` (snapfs's own `.snapshots` and work directory, which
    /// a subvolume snapshot would otherwise contain: nested snapshots as empty directories,
    /// metadata files as files). The snapshot is taken writable, trimmed, given back the
    /// source root's times, then made read-only; on error it is deleted.
    public static func snapshotTree(source: Int32, into parent: Int32, name: String,
                                    excludeAtTop: Set<String>) throws(Errno) {
        try takeTree(source: source, into: parent, name: name, excludeAtTop: excludeAtTop)
        try finishTree(in: parent, name: name)
    }

    /// The first part of ``snapshotTree(source:into:name:excludeAtTop:)``: the writable
    /// snapshot, trimmed, with the source root's times (what must happen while the source
    /// holds still). On error it is deleted.
    public static func takeTree(source: Int32, into parent: Int32, name: String,
                                excludeAtTop: Set<String>) throws(Errno) {
        var sourceStatus = stat()
        try syscall(fstat(source, &sourceStatus))
        try snapshot(source: source, into: parent, name: name, readOnly: false)
        do throws(Errno) {
            let fd = try open(name, in: parent)
            defer { close(fd) }
            var removed = false
            for excluded in excludeAtTop.sorted() {
                var status = stat()
                if fstatat(fd, excluded, &status, AT_SYMLINK_NOFOLLOW) != 0 {
                    if errno == ENOENT { continue }
                    throw .current
                }
                try TreeRemover.remove(parent: fd, name: excluded)
                removed = true
            }
            if removed {
                var times = (sourceStatus.st_atim, sourceStatus.st_mtim)
                _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
                    try syscall(futimens(fd, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
                }
            }
        } catch {
            try? delete(parent: parent, name: name)
            throw error
        }
    }

    /// The second part: the paths `exclusions` leaves out removed (``ExclusionPruner``),
    /// SQLite companions for its WAL databases (see ``SQLiteCompanion``), then read-only.
    /// Needs no quiet source (the snapshot is its own). On error it is deleted.
    public static func finishTree(in parent: Int32, name: String, exclusions: SnapshotExclusions = .none) throws(Errno) {
        do throws(Errno) {
            let fd = try open(name, in: parent)
            defer { close(fd) }
            var rootStatus = stat()
            try syscall(fstat(fd, &rootStatus))
            try ExclusionPruner.prune(fd, exclusions, noAccessTime: geteuid() == 0 ? SNAPFS_O_NOATIME : 0)
            try SQLiteCompanion.addToTree(fd, noAccessTime: geteuid() == 0 ? SNAPFS_O_NOATIME : 0)
            var times = (rootStatus.st_atim, rootStatus.st_mtim)
            _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
                try syscall(futimens(fd, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
            }
            try setReadOnly(fd)
        } catch {
            try? delete(parent: parent, name: name)
            throw error
        }
    }

    private static func open(_ name: String, in parent: Int32) throws(Errno) -> Int32 {
        try name.withCName { (name) throws(Errno) in
            try syscall(snapfs_openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | (geteuid() == 0 ? SNAPFS_O_NOATIME : 0), 0))
        }
    }
}
