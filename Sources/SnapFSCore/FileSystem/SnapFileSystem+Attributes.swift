import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SystemPackage

/// getattr, setattr and statfs.
extension SnapFileSystem {
    public func getattr(_ inode: UInt64) throws(Errno) -> stat {
        try attributes(of: try inodes.inode(inode))
    }

    /// Applies `changes` in the order chmod, chown, truncate, utimes (as ext4's setattr does),
    /// through the open file when the kernel names one.
    public func setattr(_ inode: UInt64, _ changes: AttributeChanges, file: OpenFile?,
                        context: RequestContext) throws(Errno) -> stat {
        let node = try inodes.inode(inode)
        return try mutate(.setAttributes(inode: node, size: changes.size)) { () throws(Errno) -> stat in
            if let mode = changes.mode {
                if node.isSymlink { throw Errno.notSupported }
                try node.withFD { (fd) throws(Errno) in
                    try proc.withName(of: fd) { name throws(Errno) in
                        _ = try syscall(fchmodat(proc.directory, name, mode & 0o7777, 0))
                    }
                }
            }
            if changes.uid != nil || changes.gid != nil {
                let uid = changes.uid ?? uid_t.max   // -1 leaves it unchanged
                let gid = changes.gid ?? gid_t.max
                try node.withFD { (fd) throws(Errno) in
                    _ = try syscall(fchownat(fd, "", uid, gid, SNAPFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
                }
            }
            if let size = changes.size { try truncate(node, to: size, file: file, context: context) }
            if changes.accessTime != nil || changes.modificationTime != nil {
                try setTimes(node, access: changes.accessTime, modification: changes.modificationTime, file: file)
            }
            // The kernel sends a setattr of the modification time before every fsync of a
            // file written since: its reply does not read the backing file's times.
            if case .set(let time)? = changes.modificationTime, kernelKeepsTimes(of: node) {
                return try attributes(of: node, modifiedAt: time)
            }
            return try attributes(of: node)
        }
    }

    /// With the kernel's write-back cache, the kernel keeps a regular file's modification
    /// and change times (and size) itself and ignores those in replies about it.
    func kernelKeepsTimes(of node: Inode) -> Bool {
        options.kernelWritebackCache && node.isRegularFile && !node.inSnapshotView
    }

    func truncate(_ node: Inode, to size: Int64, file: OpenFile?, context: RequestContext) throws(Errno) {
        if node.isDirectory { throw Errno.isDirectory }
        // Through the cache when it holds the file: it drops what lies past the new end.
        let cache = cacheHolding(node)
        func truncate(_ fd: Int32) throws(Errno) {
            if let cache {
                try cache.truncate(node.id, to: size, backing: cacheStore)
            } else {
                try syscallRetrying { ftruncate(fd, off_t(size)) }
            }
            dropPrivileges(fd, of: node, caller: context)
        }
        if let file, file.flags & O_ACCMODE != O_RDONLY {
            try truncate(file.fd)
            return
        }
        let fd = try node.withFD { (pathFD) throws(Errno) in try proc.reopen(pathFD, flags: O_WRONLY) }
        defer { close(fd) }
        try truncate(fd)
    }

    func setTimes(_ node: Inode, access: TimeChange?, modification: TimeChange?, file: OpenFile?) throws(Errno) {
        func spec(_ change: TimeChange?) -> timespec {
            switch change {
            case nil: return timespec(tv_sec: 0, tv_nsec: SNAPFS_UTIME_OMIT)
            case .now: return timespec(tv_sec: 0, tv_nsec: SNAPFS_UTIME_NOW)
            case .set(let ts): return ts
            }
        }
        // Dirty data written back later must not move the times set now.
        if let cache = cacheHolding(node) { try cache.writeBack(node.id, backing: cacheStore) }
        if modification != nil { node.cache.writeTime.store(0, ordering: .relaxed) }
        defer { if let modification { rememberKernelModificationTime(node, modification) } }
        var times = (spec(access), spec(modification))
        _ = try withUnsafePointer(to: &times) { pointer throws(Errno) in
            try pointer.withMemoryRebound(to: timespec.self, capacity: 2) { ts throws(Errno) in
                if let file {
                    try syscall(futimens(file.fd, ts))
                } else if node.isSymlink {
                    // utimensat accepts SNAPFS_AT_EMPTY_PATH on SNAPFS_O_PATH descriptors on current kernels.
                    try node.withFD { (fd) throws(Errno) in
                        _ = try syscall(utimensat(fd, "", ts, SNAPFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
                    }
                } else {
                    try node.withFD { (fd) throws(Errno) in
                        try proc.withName(of: fd) { name throws(Errno) in
                            _ = try syscall(utimensat(proc.directory, name, ts, 0))
                        }
                    }
                }
            }
        }
    }

    /// With the kernel's write-back cache, the modification time just set on a regular file
    /// is the kernel's own (or the application's): remembered, to be put back after the
    /// write-back at fsync and close (see ``Inode/kernelModificationTime``).
    /// A time given is stored as given (utimensat sets it exactly), so the backing file's
    /// times are not read (see ``FileStatus/withoutTimes(_:)``).
    private func rememberKernelModificationTime(_ node: Inode, _ change: TimeChange) {
        guard kernelKeepsTimes(of: node) else { return }
        let time: timespec
        switch change {
        case .set(let given): time = given
        case .now:
            guard let st = try? node.withFD({ (fd) throws(Errno) in try FileStatus.of(fd) }) else { return }
            time = st.st_mtim
        }
        node.cache.kernelModificationTime.withLock { $0 = time }
    }

    /// After the write-back at fsync or close: the kernel's modification time again.
    func restoreKernelModificationTime(_ file: OpenFile) {
        guard file.flags & O_ACCMODE != O_RDONLY,
              let time = file.inode.cache.kernelModificationTime.withLock({ $0 }) else { return }
        var times = [timespec(tv_sec: 0, tv_nsec: SNAPFS_UTIME_OMIT), time]
        _ = futimens(file.fd, &times)
    }

    public func statfs(_ inode: UInt64) throws(Errno) -> statvfs {
        let node = try inodes.inode(inode)
        var st = statvfs()
        try node.withFD { (fd) throws(Errno) in _ = try syscall(fstatvfs(fd, &st)) }
        return st
    }
}
