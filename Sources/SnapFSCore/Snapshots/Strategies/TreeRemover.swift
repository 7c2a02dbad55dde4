import CLinux
import Glibc
import SystemPackage

/// Removes a snapshot tree of any strategy: a plain tree entry by entry (whatever its
/// modes), a btrfs subvolume with the destroy ioctl, nested subvolumes included.
public enum TreeRemover {
    /// Removes the entry `name` of `parent` and everything below it, never following symlinks.
    public static func remove(parent: Int32, name: String) throws(Errno) {
        try name.withCName { (name) throws(Errno) in try remove(parent: parent, entry: name) }
    }

    static func remove(parent: Int32, entry name: UnsafePointer<CChar>) throws(Errno) {
        var status = stat()
        try syscall(fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW))
        guard status.st_mode & 0o170000 == 0o040000 else {
            try unlink(name, in: parent, flags: 0)
            return
        }
        let fd = try syscall(snapfs_openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
        let onBtrfs = BtrfsSubvolume.isOnBtrfs(fd)
        if onBtrfs && status.st_ino == SNAPFS_BTRFS_FIRST_FREE_OBJECTID {
            close(fd)
            return try BtrfsSubvolume.delete(parent: parent, entry: name)
        }
        try removeContents(of: fd, onBtrfs: onBtrfs)
        try unlink(name, in: parent, flags: AT_REMOVEDIR)
    }

    /// Empties the directory `fd`, then closes it. Depth-first with an explicit stack (one
    /// descriptor per level), so deep trees cost no recursion.
    static func removeContents(of fd: Int32, onBtrfs: Bool) throws(Errno) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        var stack = [Level(fd: fd, name: [])]
        defer { for level in stack { close(level.fd) } }
        try stack[0].scan(buffer)
        while !stack.isEmpty {
            let last = stack.count - 1
            if let child = stack[last].subdirectories.popLast() {
                let parent = stack[last].fd
                try child.withUnsafeBufferPointer { (child) throws(Errno) in
                    let name = child.baseAddress!
                    let fd = try syscall(snapfs_openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
                    if onBtrfs {
                        var status = stat()
                        if fstat(fd, &status) == 0 && status.st_ino == SNAPFS_BTRFS_FIRST_FREE_OBJECTID {
                            close(fd)
                            return try BtrfsSubvolume.delete(parent: parent, entry: name)
                        }
                    }
                    stack.append(Level(fd: fd, name: Array(child)))
                    try stack[stack.count - 1].scan(buffer)
                }
                continue
            }
            // Listing while removing may miss entries on some filesystems: look again.
            try syscall(lseek(stack[last].fd, 0, SEEK_SET))
            if try stack[last].scan(buffer) > 0 { continue }
            let level = stack.removeLast()
            close(level.fd)
            if let parent = stack.last {
                try level.name.withUnsafeBufferPointer { (name) throws(Errno) in
                    try unlink(name.baseAddress!, in: parent.fd, flags: AT_REMOVEDIR)
                }
            }
        }
    }

    /// `unlinkat`, making the directory writable first if it is not (as for a read-only
    /// snapshot's directories when we are not root).
    private static func unlink(_ name: UnsafePointer<CChar>, in directory: Int32, flags: Int32) throws(Errno) {
        if unlinkat(directory, name, flags) == 0 { return }
        guard errno == EACCES else { throw .current }
        try syscall(fchmod(directory, 0o700))
        try syscall(unlinkat(directory, name, flags))
    }

    /// One directory being emptied.
    private struct Level {
        let fd: Int32
        /// Its name in the level above, NUL-terminated.
        let name: [CChar]
        var subdirectories: [[CChar]] = []

        /// Unlinks every non-directory and notes the subdirectories; returns the number of
        /// entries seen.
        @discardableResult
        mutating func scan(_ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
            var seen = 0
            let fd = self.fd
            var found: [[CChar]] = []
            try DirectoryEntries.forEach(in: fd, buffer: buffer) { (name, type) throws(Errno) in
                seen += 1
                var isDirectory = type == DirectoryEntries.Kind.directory
                if type == DirectoryEntries.Kind.unknown {
                    var status = stat()
                    try syscall(fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW))
                    isDirectory = status.st_mode & 0o170000 == 0o040000
                }
                if isDirectory {
                    found.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
                } else {
                    try TreeRemover.unlink(name, in: fd, flags: 0)
                }
            }
            subdirectories += found
            return seen
        }
    }
}
