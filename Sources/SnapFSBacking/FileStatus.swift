import CLinux
import Glibc
import SystemPackage

/// Status of a backing object, read through its descriptor.
public enum FileStatus {
    /// `fstatat(fd, "", SNAPFS_AT_EMPTY_PATH)`: works on `SNAPFS_O_PATH` descriptors, symlinks included.
    @inline(__always)
    public static func of(_ fd: Int32) throws(Errno) -> stat {
        var st = stat()
        try syscall(fstatat(fd, "", &st, SNAPFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
        return st
    }

    /// The same without the modification and change times (`st_mtim` and `st_ctim` are
    /// zero), for the paths a write takes: reading those times makes the backing file
    /// system's next change to the file take a fine-grained timestamp, which moves every
    /// coarse clock on the machine, so the kernel would hand snapfs a new modification time
    /// (a setattr request) before every fsync of a file it caches (Linux ≥ 6.13).
    @inline(__always)
    public static func withoutTimes(_ fd: Int32) throws(Errno) -> stat {
        var st = stat()
        try syscall(snapfs_stat_without_times(fd, &st))
        return st
    }

    /// Status of `name` inside the directory `dirfd`, without following a final symlink.
    @inline(__always)
    public static func of(_ name: UnsafePointer<CChar>, in dirfd: Int32) throws(Errno) -> stat {
        var st = stat()
        try syscall(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW))
        return st
    }
}

extension stat {
    /// The `S_IFMT` bits.
    public var fileType: mode_t { st_mode & S_IFMT }
    public var isDirectory: Bool { fileType == S_IFDIR }
    public var isSymlink: Bool { fileType == S_IFLNK }
    public var isRegular: Bool { fileType == S_IFREG }
}
