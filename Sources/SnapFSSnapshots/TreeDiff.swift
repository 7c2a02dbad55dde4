import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// The differences between two directory trees: what `snapfs diff` prints.
///
/// Compared for each path present on either side:
/// - present only in the new tree: `+` (and every entry below it, if a directory);
/// - present only in the old tree: `-` (likewise);
/// - a different type of entry: `T` (the entries below a directory that became something
///   else are `-`, those below one that appeared `+`);
/// - same type but different content (bytes of a regular file, target of a symlink, device
///   number of a device), permission bits, owner, group or extended attributes: `M`.
///
/// Times and link counts are not compared: a directory's mtime changes with every entry
/// added, and the entries say more. Two regular files with the same (st_dev, st_ino) are the
/// same file and are not read (a hard-link snapshot shares the inodes of unchanged files);
/// otherwise sizes are compared first, and bytes only when the sizes agree.
public struct TreeDiff: Sendable {
    /// The kind of a difference, as printed.
    public enum Change: String, Sendable {
        case added = "+"
        case deleted = "-"
        case modified = "M"
        case typeChanged = "T"
    }

    /// One changed path.
    public struct Difference: Equatable, Sendable, CustomStringConvertible {
        public let change: Change
        /// The path relative to the roots, components joined by `/`; raw bytes, since file
        /// names need not be UTF-8.
        public let path: [UInt8]

        public init(_ change: Change, _ path: [UInt8]) {
            self.change = change
            self.path = path
        }

        public init(_ change: Change, _ path: String) {
            self.init(change, Array(path.utf8))
        }

        /// The path for display (invalid UTF-8 shown as U+FFFD).
        public var pathString: String { String(decoding: path, as: UTF8.self) }

        /// `+ dir/file`, the path escaped (see ``PathText``): one line per difference,
        /// whatever the names hold.
        public var description: String { "\(change.rawValue) \(PathText.escaped(path))" }
    }

    /// Names left out at the top of both trees (`.snapshots`, `.snapfs-control`, ...).
    public var excludedAtRoot: Set<[UInt8]>

    public init(excludedAtRoot: [String] = []) {
        self.excludedAtRoot = Set(excludedAtRoot.map { Array($0.utf8) })
    }

    /// Compares the trees at `oldPath` and `newPath`; `progress` is told of every entry
    /// compared.
    public func compare(oldPath: String, newPath: String, only paths: [String]? = nil,
                        progress: ProgressMeter? = nil) throws(Errno) -> [Difference] {
        let old = open(oldPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if old < 0 { throw Errno.current }
        defer { close(old) }
        let new = open(newPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if new < 0 { throw Errno.current }
        defer { close(new) }
        return try compare(old: old, new: new, only: paths, progress: progress)
    }

    /// Compares the trees below the directories `old` and `new`, sorted by path (byte order).
    /// With `paths` (relative, `/`-separated), only those paths and what lies below them are
    /// compared; a path missing on both sides gives nothing. `progress` is told of every
    /// entry compared.
    public func compare(old: Int32, new: Int32, only paths: [String]? = nil,
                        progress: ProgressMeter? = nil) throws(Errno) -> [Difference] {
        var differences: [Difference] = []
        if let paths {
            var seen: Set<[UInt8]> = []
            for path in paths {
                let components = path.split(separator: "/").filter { $0 != "." }.map { Array($0.utf8) }
                guard !components.isEmpty else {
                    try walk(old: DirectoryCursor(at: old), new: DirectoryCursor(at: new), prefix: [], atRoot: true, progress: progress, into: &differences)
                    continue
                }
                if components.contains([UInt8(ascii: "."), UInt8(ascii: ".")]) { throw Errno.invalidArgument }
                if excludedAtRoot.contains(components[0]) { continue }
                let oldParent = try Self.openParent(old, components)
                defer { if let oldParent { close(oldParent) } }
                let newParent = try Self.openParent(new, components)
                defer { if let newParent { close(newParent) } }
                let name = components.last!
                let path = Array(components.joined(separator: [UInt8(ascii: "/")]))
                progress?.tick()
                if let descend = try compareEntry(oldParent, newParent, name: name, path: path, into: &differences) {
                    try walk(old: descend.old ? DirectoryCursor(at: oldParent!, name) : nil,
                             new: descend.new ? DirectoryCursor(at: newParent!, name) : nil,
                             prefix: path, atRoot: false, progress: progress, into: &differences)
                }
            }
            differences = differences.filter { seen.insert($0.path).inserted }
        } else {
            try walk(old: DirectoryCursor(at: old), new: DirectoryCursor(at: new), prefix: [], atRoot: true, progress: progress, into: &differences)
        }
        return differences.sorted { $0.path.lexicographicallyPrecedes($1.path) }
    }

    // MARK: Walking

    /// Which sides to go down into after an entry: a directory on both sides, or on one.
    private struct Descent {
        let old: Bool
        let new: Bool
    }

    /// One directory of the walk: the names left to compare there and the sides it is on.
    private struct Level {
        let names: [[UInt8]]
        var next = 0
        let prefix: [UInt8]
        let old: Bool
        let new: Bool
    }

    /// Compares everything below the directories at `old` and `new` (either may be missing:
    /// then everything on the other side is added or deleted). Iterative, with one descriptor
    /// per side whatever the depth.
    private func walk(old: DirectoryCursor?, new: DirectoryCursor?, prefix: [UInt8], atRoot: Bool,
                      progress: ProgressMeter?, into differences: inout [Difference]) throws(Errno) {
        var levels = [Level(names: try names(old: old, new: new, atRoot: atRoot), prefix: prefix, old: old != nil, new: new != nil)]
        while !levels.isEmpty {
            let top = levels.count - 1
            guard levels[top].next < levels[top].names.count else {
                let level = levels.removeLast()
                if !levels.isEmpty {
                    if level.old { try old!.ascend() }
                    if level.new { try new!.ascend() }
                }
                continue
            }
            let name = levels[top].names[levels[top].next]
            levels[top].next += 1
            let prefix = levels[top].prefix
            let path = prefix.isEmpty ? name : prefix + [UInt8(ascii: "/")] + name
            progress?.tick()
            guard let descent = try compareEntry(levels[top].old ? old!.fd : nil, levels[top].new ? new!.fd : nil,
                                                 name: name, path: path, into: &differences) else { continue }
            if descent.old { try old!.descend(name) }
            if descent.new {
                do throws(Errno) { try new!.descend(name) } catch {
                    if descent.old { try old!.ascend() }
                    throw error
                }
            }
            levels.append(Level(names: try names(old: descent.old ? old : nil, new: descent.new ? new : nil, atRoot: false),
                                prefix: path, old: descent.old, new: descent.new))
        }
    }

    /// The names in either directory, sorted.
    private func names(old: DirectoryCursor?, new: DirectoryCursor?, atRoot: Bool) throws(Errno) -> [[UInt8]] {
        var names = Set<[UInt8]>()
        if let old { names.formUnion(try DirectoryNames.names(in: old.fd)) }
        if let new { names.formUnion(try DirectoryNames.names(in: new.fd)) }
        if atRoot { names.subtract(excludedAtRoot) }
        return names.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Records the difference of one entry; returns the sides to walk below it, if any.
    private func compareEntry(_ oldDir: Int32?, _ newDir: Int32?, name: [UInt8], path: [UInt8],
                              into differences: inout [Difference]) throws(Errno) -> Descent? {
        let old = try oldDir.flatMap { (dir) throws(Errno) in try Self.status(dir, name) }
        let new = try newDir.flatMap { (dir) throws(Errno) in try Self.status(dir, name) }
        switch (old, new) {
        case (nil, nil):
            return nil
        case (nil, let new?):
            if SQLiteCompanion.isPlaceholder(name, new) { return nil }
            differences.append(Difference(.added, path))
            return new.isDirectory ? Descent(old: false, new: true) : nil
        case (let old?, nil):
            if SQLiteCompanion.isPlaceholder(name, old) { return nil }
            differences.append(Difference(.deleted, path))
            return old.isDirectory ? Descent(old: true, new: false) : nil
        case (let old?, let new?):
            if old.fileType != new.fileType {
                differences.append(Difference(.typeChanged, path))
                // At most one of them is a directory: its entries are deleted, or added.
                if old.isDirectory || new.isDirectory { return Descent(old: old.isDirectory, new: new.isDirectory) }
                return nil
            }
            if try isModified(oldDir!, newDir!, name, old, new) {
                differences.append(Difference(.modified, path))
            }
            return old.isDirectory ? Descent(old: true, new: true) : nil
        }
    }

    private func isModified(_ oldDir: Int32, _ newDir: Int32, _ name: [UInt8], _ old: stat, _ new: stat) throws(Errno) -> Bool {
        if old.st_dev == new.st_dev && old.st_ino == new.st_ino && !old.isDirectory { return false }
        if old.st_uid != new.st_uid || old.st_gid != new.st_gid { return true }
        // A symlink's permission bits mean nothing (and differ between filesystems).
        if !old.isSymlink && (old.st_mode & 0o7777) != (new.st_mode & 0o7777) { return true }
        switch old.fileType {
        case S_IFREG:
            if old.st_size != new.st_size { return true }
            if try !FileContent.equal(in: oldDir, name, and: newDir, name) { return true }
        case S_IFLNK:
            if try Self.linkTarget(oldDir, name) != Self.linkTarget(newDir, name) { return true }
        case S_IFCHR, S_IFBLK:
            if old.st_rdev != new.st_rdev { return true }
        default:
            break
        }
        let oldAttributes = try ExtendedAttributeList.all(in: oldDir, name)
        let newAttributes = try ExtendedAttributeList.all(in: newDir, name)
        return !oldAttributes.elementsEqual(newAttributes) { $0.name == $1.name && $0.value == $1.value }
    }

    // MARK: Helpers

    /// lstat of `name` in `dir`, or nil if there is no such entry.
    public static func status(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> stat? {
        var st = stat()
        let result = name.withCString { fstatat(dir, $0, &st, AT_SYMLINK_NOFOLLOW) }
        if result == 0 { return st }
        if errno == ENOENT || errno == ENOTDIR { return nil }
        throw Errno.current
    }

    static func openDirectory(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> Int32 {
        let fd = name.withCString { snapfs_openat(dir, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
        if fd < 0 { throw Errno.current }
        return fd
    }

    /// The directory holding the last of `components` below `root`, or nil if some directory
    /// on the way is missing (or not a directory).
    public static func openParent(_ root: Int32, _ components: [[UInt8]]) throws(Errno) -> Int32? {
        var current = try openDirectory(root, Array(".".utf8))
        for component in components.dropLast() {
            let next = component.withCString { snapfs_openat(current, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0) }
            let failure = errno
            close(current)
            if next < 0 {
                if failure == ENOENT || failure == ENOTDIR || failure == ELOOP { return nil }
                throw Errno(rawValue: failure)
            }
            current = next
        }
        return current
    }

    /// The target of the symlink `name` in `dir`.
    public static func linkTarget(_ dir: Int32, _ name: [UInt8]) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = name.withCString { cName in
            buffer.withUnsafeMutableBytes { readlinkat(dir, cName, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        }
        if n < 0 { throw Errno.current }
        return Array(buffer[0..<n])
    }
}
