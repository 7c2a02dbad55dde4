import CLinux
import Glibc
import SystemPackage

/// Makes paths of a target tree equal to the same paths of a source tree: what
/// `snapfs restore` does, from a snapshot to the live tree through the mount.
///
/// For each restored path: regular files get the source's bytes, symlinks its target,
/// devices and FIFOs its device number; every entry gets its owner, group, permission bits,
/// extended attributes and access/modification times; directories are restored entry by
/// entry, and entries of the target that the source does not have are removed (only below
/// the restored paths). An entry of another type is replaced. Files that are already equal
/// are left in place (not rewritten), so that restoring an unchanged tree writes nothing.
/// New content is written to a temporary file next to its place and renamed over it, so a
/// reader sees the old or the new file, never a mix. Regular files hard-linked to each other
/// in the source (same inode) become hard links in the target.
///
/// The source is only read. Owner changes that the caller may not make (not root) are
/// skipped; extended attributes the target filesystem does not support are skipped.
public struct TreeRestore {
    /// What a restore did.
    public struct Summary: Equatable, Sendable {
        /// Files, symlinks and special files written anew.
        public var written = 0
        /// Hard links made to a file restored earlier.
        public var linked = 0
        /// Directories created.
        public var directoriesCreated = 0
        /// Entries (with everything below them) removed from the target.
        public var removed = 0
        /// Entries whose content was already right (metadata may still have been fixed).
        public var unchanged = 0

        public init() {}
    }

    /// Names left alone at the top of both trees (`.snapshots`, `.snapfs-control`): never
    /// restored, never removed.
    public var excludedAtRoot: Set<[UInt8]>

    public init(excludedAtRoot: [String] = []) {
        self.excludedAtRoot = Set(excludedAtRoot.map { Array($0.utf8) })
    }

    /// Restores `paths` (relative, `/`-separated; `""` or `.` for the whole tree) from the
    /// directory `sourcePath` into `targetPath`. Throws ENOENT, before changing anything, if a
    /// path is missing in the source; EINVAL for a path with `..` or an excluded first
    /// component.
    @discardableResult
    public func restore(from sourcePath: String, to targetPath: String, paths: [String]) throws(Errno) -> Summary {
        let source = open(sourcePath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if source < 0 { throw Errno.current }
        defer { close(source) }
        let target = open(targetPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if target < 0 { throw Errno.current }
        defer { close(target) }
        return try restore(from: source, to: target, paths: paths)
    }

    /// Restores `paths` from the directory `source` into the directory `target`.
    @discardableResult
    public func restore(from source: Int32, to target: Int32, paths: [String]) throws(Errno) -> Summary {
        let split = try paths.map { (path) throws(Errno) -> [[UInt8]] in
            let components = path.split(separator: "/").filter { $0 != "." }.map { Array($0.utf8) }
            if components.contains(Array("..".utf8)) { throw Errno.invalidArgument }
            if let first = components.first, excludedAtRoot.contains(first) { throw Errno.invalidArgument }
            return components
        }
        // Every path must exist in the source before anything changes.
        for components in split where !components.isEmpty {
            guard let parent = try TreeDiff.openParent(source, components) else { throw Errno.noSuchFileOrDirectory }
            defer { close(parent) }
            if try TreeDiff.status(parent, components.last!) == nil { throw Errno.noSuchFileOrDirectory }
        }
        var run = Run(excludedAtRoot: excludedAtRoot, targetRoot: target)
        for components in split {
            if components.isEmpty {
                try run.restoreDirectoryContents(source, target, prefix: [], atRoot: true)
                try run.applyMetadata(of: source, Array(".".utf8), to: target, Array(".".utf8))
            } else {
                try run.restorePath(components, source: source, target: target)
            }
        }
        return run.summary
    }
}

/// The state of one restore: the summary and the hard links seen.
private struct Run {
    let excludedAtRoot: Set<[UInt8]>
    let targetRoot: Int32
    var summary = TreeRestore.Summary()
    /// Source (st_dev, st_ino) of multiply-linked files → their restored path below the target.
    var restoredInodes: [InodeKey: [UInt8]] = [:]

    struct InodeKey: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    static let dot = Array(".".utf8)
    static let slash = UInt8(ascii: "/")

    init(excludedAtRoot: Set<[UInt8]>, targetRoot: Int32) {
        self.excludedAtRoot = excludedAtRoot
        self.targetRoot = targetRoot
    }

    /// Restores one path, creating (or replacing) the directories above it as in the source.
    mutating func restorePath(_ components: [[UInt8]], source: Int32, target: Int32) throws(Errno) {
        var sourceDir = try TreeDiff.openDirectory(source, Self.dot)
        var targetDir = try TreeDiff.openDirectory(target, Self.dot)
        defer { close(sourceDir); close(targetDir) }
        var prefix: [UInt8] = []
        for component in components.dropLast() {
            prefix = prefix.isEmpty ? component : prefix + [Self.slash] + component
            let existing = try TreeDiff.status(targetDir, component)
            if existing == nil || !existing!.isDirectory {
                if existing != nil { try removeTree(targetDir, component) }
                try make(component, in: targetDir) { mkdirat(targetDir, $0, 0o700) }
                summary.directoriesCreated += 1
                try applyMetadata(of: sourceDir, component, to: targetDir, component)
            }
            let nextSource = try TreeDiff.openDirectory(sourceDir, component)
            close(sourceDir)
            sourceDir = nextSource
            let nextTarget = try TreeDiff.openDirectory(targetDir, component)
            close(targetDir)
            targetDir = nextTarget
        }
        let name = components.last!
        try restoreEntry(sourceDir, targetDir, name, path: prefix.isEmpty ? name : prefix + [Self.slash] + name)
    }

    mutating func restoreDirectoryContents(_ source: Int32, _ target: Int32, prefix: [UInt8], atRoot: Bool) throws(Errno) {
        var sourceNames = Set(try DirectoryNames.names(in: source))
        var targetNames = Set(try DirectoryNames.names(in: target))
        if atRoot {
            sourceNames.subtract(excludedAtRoot)
            targetNames.subtract(excludedAtRoot)
        }
        for name in targetNames.subtracting(sourceNames) {
            try removeTree(target, name)
        }
        for name in sourceNames.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            try restoreEntry(source, target, name, path: prefix.isEmpty ? name : prefix + [Self.slash] + name)
        }
    }

    mutating func restoreEntry(_ sourceDir: Int32, _ targetDir: Int32, _ name: [UInt8], path: [UInt8]) throws(Errno) {
        guard let source = try TreeDiff.status(sourceDir, name) else { throw Errno.noSuchFileOrDirectory }
        var target = try TreeDiff.status(targetDir, name)
        if let existing = target, existing.fileType != source.fileType {
            try removeTree(targetDir, name)
            target = nil
        }
        switch source.fileType {
        case S_IFDIR:
            if target == nil {
                try make(name, in: targetDir) { mkdirat(targetDir, $0, 0o700) }
                summary.directoriesCreated += 1
            }
            let sourceFD = try TreeDiff.openDirectory(sourceDir, name)
            defer { close(sourceFD) }
            let targetFD = try TreeDiff.openDirectory(targetDir, name)
            defer { close(targetFD) }
            try restoreDirectoryContents(sourceFD, targetFD, prefix: path, atRoot: false)
        case S_IFREG:
            let key = InodeKey(device: UInt64(source.st_dev), inode: UInt64(source.st_ino))
            if source.st_nlink > 1, let first = restoredInodes[key] {
                try link(first, to: targetDir, name, existing: target)
                return  // the link shares the first path's metadata
            }
            if let target, target.st_size == source.st_size,
               try FileContent.equal(in: sourceDir, name, and: targetDir, name) {
                summary.unchanged += 1
            } else {
                try replace(name, in: targetDir) { (temporary) throws(Errno) in
                    try copyFile(sourceDir, name, to: targetDir, temporary)
                }
                summary.written += 1
            }
            if source.st_nlink > 1 { restoredInodes[key] = path }
        case S_IFLNK:
            let wanted = try TreeDiff.linkTarget(sourceDir, name)
            if target != nil, try TreeDiff.linkTarget(targetDir, name) == wanted {
                summary.unchanged += 1
            } else {
                try replace(name, in: targetDir) { (temporary) throws(Errno) in
                    try Self.check(wanted.withCString { w in temporary.withCString { symlinkat(w, targetDir, $0) } })
                }
                summary.written += 1
            }
        default:
            if let target, target.st_rdev == source.st_rdev {
                summary.unchanged += 1
            } else {
                if target != nil { try removeTree(targetDir, name) }
                try replace(name, in: targetDir) { (temporary) throws(Errno) in
                    try Self.check(temporary.withCString { mknodat(targetDir, $0, source.st_mode & S_IFMT | 0o600, source.st_rdev) })
                }
                summary.written += 1
            }
        }
        try applyMetadata(of: sourceDir, name, to: targetDir, name)
    }

    /// Owner, extended attributes, permission bits and times of the source entry onto the
    /// target entry. In this order: chown clears set-id bits and file capabilities, and
    /// every change moves ctime but only utimensat sets mtime.
    func applyMetadata(of sourceDir: Int32, _ sourceName: [UInt8], to targetDir: Int32, _ targetName: [UInt8]) throws(Errno) {
        guard let source = try TreeDiff.status(sourceDir, sourceName),
              let target = try TreeDiff.status(targetDir, targetName) else { throw Errno.noSuchFileOrDirectory }
        if source.st_uid != target.st_uid || source.st_gid != target.st_gid {
            let result = targetName.withCString { fchownat(targetDir, $0, source.st_uid, source.st_gid, AT_SYMLINK_NOFOLLOW) }
            // Only root may give files away; an ordinary user restores what they may.
            if result != 0 && !(errno == EPERM && geteuid() != 0) { throw Errno.current }
        }
        let wanted = try ExtendedAttributeList.all(in: sourceDir, sourceName)
        let present = try ExtendedAttributeList.all(in: targetDir, targetName)
        if !wanted.elementsEqual(present, by: { $0.name == $1.name && $0.value == $1.value }) {
            let wantedNames = Set(wanted.map(\.name))
            for attribute in present where !wantedNames.contains(attribute.name) {
                try ignoringUnsupported { () throws(Errno) in
                    try ExtendedAttributeList.remove(in: targetDir, targetName, attribute: attribute.name)
                }
            }
            for attribute in wanted {
                try ignoringUnsupported { () throws(Errno) in
                    try ExtendedAttributeList.set(in: targetDir, targetName, attribute: attribute.name, value: attribute.value)
                }
            }
        }
        if !source.isSymlink {
            try Self.check(targetName.withCString { fchmodat(targetDir, $0, source.st_mode & 0o7777, 0) })
        }
        var times = [source.st_atim, source.st_mtim]
        try Self.check(targetName.withCString { utimensat(targetDir, $0, &times, AT_SYMLINK_NOFOLLOW) })
    }

    /// Makes `name` in `targetDir` a hard link to the already restored `first` (a path below
    /// the target root).
    mutating func link(_ first: [UInt8], to targetDir: Int32, _ name: [UInt8], existing: stat?) throws(Errno) {
        var firstStatus = stat()
        try Self.check(first.withCString { fstatat(targetRoot, $0, &firstStatus, AT_SYMLINK_NOFOLLOW) })
        if let existing, existing.st_dev == firstStatus.st_dev, existing.st_ino == firstStatus.st_ino {
            summary.unchanged += 1
            return
        }
        try replace(name, in: targetDir) { (temporary) throws(Errno) in
            try Self.check(first.withCString { f in temporary.withCString { linkat(targetRoot, f, targetDir, $0, 0) } })
        }
        summary.linked += 1
    }

    /// Creates the new entry under a temporary name with `create`, then renames it over
    /// `name`; on failure the temporary entry is removed and `name` is untouched.
    func replace(_ name: [UInt8], in dir: Int32, create: ([UInt8]) throws(Errno) -> Void) throws(Errno) {
        let temporary = Array(".snapfs-restore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))".utf8)
        do {
            try create(temporary)
            try Self.check(temporary.withCString { t in name.withCString { renameat(dir, t, dir, $0) } })
        } catch {
            _ = temporary.withCString { unlinkat(dir, $0, 0) }
            throw error
        }
    }

    /// Creates `name` with `create` (mkdirat and the like).
    func make(_ name: [UInt8], in dir: Int32, create: (UnsafePointer<CChar>) -> Int32) throws(Errno) {
        try Self.check(name.withCString(create))
    }

    /// Copies the bytes of the regular file `sourceName` into a new file `targetName`.
    func copyFile(_ sourceDir: Int32, _ sourceName: [UInt8], to targetDir: Int32, _ targetName: [UInt8]) throws(Errno) {
        let input = try FileContent.openRegular(sourceDir, sourceName)
        defer { close(input) }
        let output = targetName.withCString { snapfs_openat(targetDir, $0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        if output < 0 { throw Errno.current }
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try syscallRetrying { buffer.withUnsafeMutableBytes { read(input, $0.baseAddress!, $0.count) } }
            if n == 0 { break }
            var offset = 0
            while offset < n {
                offset += try syscallRetrying { buffer.withUnsafeBytes { write(output, $0.baseAddress! + offset, n - offset) } }
            }
        }
        // Errors of the write-back (ENOSPC, EIO) show up here at the latest.
        try syscallRetrying { fsync(output) }
    }

    /// Removes `name` from `dir`, with everything below it if it is a directory.
    mutating func removeTree(_ dir: Int32, _ name: [UInt8]) throws(Errno) {
        guard let status = try TreeDiff.status(dir, name) else { return }
        if status.isDirectory {
            let fd = try TreeDiff.openDirectory(dir, name)
            defer { close(fd) }
            for child in try DirectoryNames.names(in: fd) {
                try removeChild(fd, child)
            }
            try Self.check(name.withCString { unlinkat(dir, $0, AT_REMOVEDIR) })
        } else {
            try Self.check(name.withCString { unlinkat(dir, $0, 0) })
        }
        summary.removed += 1
    }

    /// removeTree without counting: the summary counts the top of a removed subtree.
    private mutating func removeChild(_ dir: Int32, _ name: [UInt8]) throws(Errno) {
        let before = summary.removed
        try removeTree(dir, name)
        summary.removed = before
    }

    func ignoringUnsupported(_ body: () throws(Errno) -> Void) throws(Errno) {
        do {
            try body()
        } catch .notSupported {
            // The target filesystem lacks this namespace of attributes.
        } catch {
            throw error
        }
    }

    static func check(_ result: Int32) throws(Errno) {
        if result != 0 { throw Errno.current }
    }
}
