import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// Removes a snapshot tree of any strategy: a plain tree entry by entry (whatever its
/// modes), a btrfs subvolume with the destroy ioctl, nested subvolumes included.
public enum TreeRemover {
    /// Removes the entry `name` of `parent` and everything below it, never following
    /// symlinks; `count` (if given) counts the entries removed, for a progress report.
    public static func remove(parent: Int32, name: String, count: RemovalCount? = nil) throws(Errno) {
        try name.withCName { (name) throws(Errno) in try remove(parent: parent, entry: name, count: count) }
    }

    static func remove(parent: Int32, entry name: UnsafePointer<CChar>, count: RemovalCount? = nil) throws(Errno) {
        var status = stat()
        try syscall(fstatat(parent, name, &status, AT_SYMLINK_NOFOLLOW))
        guard status.st_mode & 0o170000 == 0o040000 else {
            try unlink(name, in: parent, flags: 0, count: count)
            return
        }
        let cursor = try DirectoryCursor(at: parent, Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name))))
        let onBtrfs = BtrfsSubvolume.isOnBtrfs(cursor.fd)
        if onBtrfs && status.st_ino == SNAPFS_BTRFS_FIRST_FREE_OBJECTID {
            return try BtrfsSubvolume.delete(parent: parent, entry: name)
        }
        try Seal.remove(cursor.fd)
        try removeContents(of: cursor, onBtrfs: onBtrfs, count: count)
        try unlink(name, in: parent, flags: AT_REMOVEDIR, count: count)
    }

    /// Empties the directory at `cursor`, which ends where it started. Depth-first with an
    /// explicit list of levels, through a cursor: one descriptor and no recursion however
    /// deep the tree.
    static func removeContents(of cursor: DirectoryCursor, onBtrfs: Bool, count: RemovalCount? = nil) throws(Errno) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        var stack = [Level(name: [])]
        try stack[0].scan(cursor.fd, buffer, count: count)
        while !stack.isEmpty {
            let last = stack.count - 1
            if let child = stack[last].subdirectories.popLast() {
                let bytes = Array(child.dropLast().map { UInt8(bitPattern: $0) })
                if onBtrfs, let status = try TreeDiff.status(cursor.fd, bytes), status.st_ino == SNAPFS_BTRFS_FIRST_FREE_OBJECTID {
                    try child.withUnsafeBufferPointer { (name) throws(Errno) in
                        try BtrfsSubvolume.delete(parent: cursor.fd, entry: name.baseAddress!)
                    }
                    continue
                }
                try cursor.descend(bytes)
                try Seal.remove(cursor.fd)
                stack.append(Level(name: child))
                try stack[stack.count - 1].scan(cursor.fd, buffer, count: count)
                continue
            }
            // Listing while removing may miss entries on some filesystems: look again.
            if try stack[last].scan(cursor.fd, buffer, count: count) > 0 { continue }
            let level = stack.removeLast()
            if !stack.isEmpty {
                try cursor.ascend()
                try level.name.withUnsafeBufferPointer { (name) throws(Errno) in
                    try unlink(name.baseAddress!, in: cursor.fd, flags: AT_REMOVEDIR, count: count)
                }
            }
        }
    }

    /// `unlinkat`, making the directory writable first if it is not (as for a read-only
    /// snapshot's directories when we are not root).
    private static func unlink(_ name: UnsafePointer<CChar>, in directory: Int32, flags: Int32,
                               count: RemovalCount? = nil) throws(Errno) {
        defer { count?.removed.add(1, ordering: .relaxed) }
        if unlinkat(directory, name, flags) == 0 { return }
        if errno == EPERM {
            // A sealed snapshot (see ``Seal``): the entry or its directory is immutable.
            let failure = Errno.current
            let entry = (try? Seal.remove(name, in: directory)) ?? false
            let parent = (try? Seal.remove(directory)) ?? false
            guard entry || parent else { throw failure }
            try syscall(unlinkat(directory, name, flags))
            return
        }
        guard errno == EACCES else { throw .current }
        try syscall(fchmod(directory, 0o700))
        try syscall(unlinkat(directory, name, flags))
    }

    /// One directory being emptied.
    private struct Level {
        /// Its name in the level above, NUL-terminated.
        let name: [CChar]
        var subdirectories: [[CChar]] = []

        /// Unlinks every non-directory and notes the subdirectories; returns the number of
        /// entries seen.
        @discardableResult
        mutating func scan(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, count: RemovalCount? = nil) throws(Errno) -> Int {
            try syscall(lseek(fd, 0, SEEK_SET))
            var seen = 0
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
                    try TreeRemover.unlink(name, in: fd, flags: 0, count: count)
                }
            }
            subdirectories += found
            return seen
        }
    }
}

/// How many entries a ``TreeRemover`` run has removed so far, read by another thread (the
/// `deleting:` status line, which `snapfs delete` shows as its progress on a terminal).
public final class RemovalCount: Sendable {
    let removed = Atomic<Int>(0)

    public init() {}

    public var value: Int { removed.load(ordering: .relaxed) }
}
