import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// Removes the excluded paths (``SnapshotExclusions``) from a tree that was taken whole: a
/// btrfs snapshot, still writable. Through a ``DirectoryCursor`` (one descriptor however deep,
/// never following a symlink), only as deep as a pattern can reach: the whole tree when a
/// pattern matches names, else down to the deepest path pattern. A directory that loses an
/// entry gets its times back, so the snapshot shows the times of the live tree.
enum ExclusionPruner {
    /// One directory of the walk: its name in the one above (empty at the top), its path
    /// while path patterns can match below it, and the subdirectories left to walk.
    private struct Level {
        let name: [UInt8]
        let path: [UInt8]?
        var subdirectories: [(name: [UInt8], path: [UInt8]?)] = []
    }

    /// Prunes the tree whose top directory is `top` (the caller's descriptor). Returns the
    /// number of entries removed (each with everything below it).
    @discardableResult
    static func prune(_ top: Int32, _ exclusions: SnapshotExclusions, noAccessTime: Int32) throws(Errno) -> Int {
        if exclusions.isEmpty { return 0 }
        let walkAll = !exclusions.namePatterns.isEmpty
        let cursor = try DirectoryCursor(at: top, extraFlags: noAccessTime)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        var removed = 0
        var stack = [Level(name: [], path: exclusions.topPath)]
        stack[0].subdirectories = try scan(cursor, path: stack[0].path, exclusions, walkAll: walkAll, buffer: buffer, removed: &removed)
        while !stack.isEmpty {
            let last = stack.count - 1
            if let child = stack[last].subdirectories.popLast() {
                try cursor.descend(child.name)
                var level = Level(name: child.name, path: child.path)
                level.subdirectories = try scan(cursor, path: child.path, exclusions, walkAll: walkAll, buffer: buffer, removed: &removed)
                stack.append(level)
                continue
            }
            stack.removeLast()
            if !stack.isEmpty { try cursor.ascend() }
        }
        return removed
    }

    /// Removes the excluded entries of the cursor's directory and returns the subdirectories
    /// to walk.
    private static func scan(_ cursor: DirectoryCursor, path: [UInt8]?, _ exclusions: SnapshotExclusions, walkAll: Bool,
                             buffer: UnsafeMutableRawBufferPointer, removed: inout Int) throws(Errno) -> [(name: [UInt8], path: [UInt8]?)] {
        var excluded: [[CChar]] = []
        var subdirectories: [(name: [UInt8], path: [UInt8]?)] = []
        let fd = cursor.fd
        try DirectoryEntries.forEach(in: fd, buffer: buffer) { (name, type) throws(Errno) in
            if exclusions.excludes(name, in: path) {
                excluded.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
                return
            }
            var isDirectory = type == DirectoryEntries.Kind.directory
            if type == DirectoryEntries.Kind.unknown {
                var status = stat()
                try syscall(fstatat(fd, name, &status, AT_SYMLINK_NOFOLLOW))
                isDirectory = status.st_mode & 0o170000 == 0o040000
            }
            guard isDirectory else { return }
            let childPath = exclusions.childPath(name, of: path)
            if walkAll || childPath != nil {
                let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name)))
                subdirectories.append((bytes, childPath))
            }
        }
        guard !excluded.isEmpty else { return subdirectories }
        for name in excluded {
            try name.withUnsafeBufferPointer { (name) throws(Errno) in try TreeRemover.remove(parent: fd, entry: name.baseAddress!) }
        }
        removed += excluded.count
        // The removals changed the directory's times; the snapshot keeps the live tree's.
        var times = (cursor.status.st_atim, cursor.status.st_mtim)
        _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
            try syscall(futimens(fd, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
        }
        return subdirectories
    }
}
