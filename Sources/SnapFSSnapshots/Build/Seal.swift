import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// The immutable flag (`chattr +i`) that keeps a finished snapshot as it is, against root too.
///
/// A snapshot in `BACKING/.snapshots` is a plain directory tree, which root's everyday tools
/// would change: `sqlite3` opened on a snapshot's database creates `-wal`/`-shm` files beside
/// it and, for a WAL database, writes the log back into the database file when it closes.
/// So every directory of a snapshot built file by file is made immutable once it is complete
/// (nothing can be created, removed or renamed in it), and so are the snapshot's own copies
/// of SQLite's `-wal`, `-shm` and `-journal` files (with them read-only, a connection cannot
/// write the database either). Files a hard-link snapshot shares with the live tree are not
/// flagged: the flag belongs to the inode, and would freeze the live file. Only snapfs's own
/// delete and prune clear the flags (root can too, with `chattr -i`). Filesystems without
/// the flag (ENOTTY, EOPNOTSUPP) simply go without.
enum Seal {
    /// Sets the immutable flag on the directory or regular file open at `fd`.
    static func apply(_ fd: Int32) throws(Errno) {
        var flags: Int32 = 0
        guard snapfs_get_inode_flags(fd, &flags) == 0 else {
            if Self.unsupported(errno) { return }
            throw .current
        }
        if flags & SNAPFS_FS_IMMUTABLE_FL != 0 { return }
        if snapfs_set_inode_flags(fd, flags | SNAPFS_FS_IMMUTABLE_FL) != 0 && !Self.unsupported(errno) { throw .current }
    }

    /// Clears the flag; true if it was set.
    @discardableResult
    static func remove(_ fd: Int32) throws(Errno) -> Bool {
        var flags: Int32 = 0
        guard snapfs_get_inode_flags(fd, &flags) == 0 else {
            if Self.unsupported(errno) { return false }
            throw .current
        }
        guard flags & SNAPFS_FS_IMMUTABLE_FL != 0 else { return false }
        try syscall(snapfs_set_inode_flags(fd, flags & ~SNAPFS_FS_IMMUTABLE_FL))
        return true
    }

    /// Clears the flag of the entry `name` in `dir` (a regular file or directory; nothing
    /// else can carry it), without following a symlink or blocking on a FIFO.
    static func remove(_ name: UnsafePointer<CChar>, in dir: Int32) throws(Errno) -> Bool {
        let fd = snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0)
        if fd < 0 { return false }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG || status.st_mode & S_IFMT == S_IFDIR else { return false }
        return try remove(fd)
    }

    private static func unsupported(_ error: Int32) -> Bool {
        error == ENOTTY || error == EOPNOTSUPP || error == ENOTSUP || error == EINVAL
    }
}
