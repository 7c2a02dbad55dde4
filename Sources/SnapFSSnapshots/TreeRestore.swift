import CLinux
import Glibc
import SnapFSBacking
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
///
/// Users may change the target while it is restored (it is a live tree). So every change is
/// made on an object the restore opened or made itself and checked: metadata is set through
/// descriptors (`fchown`, `fchmod`, `futimens`), never by a name that could be swapped for a
/// symlink; new files are finished under a fresh name before they are renamed into place;
/// directories are entered with `O_NOFOLLOW`, and left through `..` only if it is still the
/// directory the walk came from. The walk holds two descriptors whatever the depth.
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
    /// Told of every entry of the snapshot restored and every entry removed from the target
    /// (with what is below it, as one), for a progress line; nil for none.
    public var progress: ProgressMeter?
    /// Paths the mount leaves out of its tree snapshots (``SnapshotExclusions``): never
    /// restored, never removed, so that restoring a snapshot, which does not have them,
    /// does not delete them from the live tree.
    public var exclusions: SnapshotExclusions

    public init(excludedAtRoot: [String] = [], exclusions: SnapshotExclusions = .none, progress: ProgressMeter? = nil) {
        self.excludedAtRoot = Set(excludedAtRoot.map { Array($0.utf8) })
        self.exclusions = exclusions
        self.progress = progress
    }

    /// Restores `paths` (relative, `/`-separated; `""` or `.` for the whole tree) from the
    /// directory `sourcePath` into `targetPath`. Throws ENOENT, before changing anything, if a
    /// path is missing in the source; EINVAL for a path with `..` or an excluded first
    /// component.
    @discardableResult
    public func restore(from sourcePath: String, to targetPath: String, paths: [String]) throws(Errno) -> Summary {
        try restore(from: sourcePath, to: targetPath, paths: paths.map { Array($0.utf8) })
    }

    /// As above, with paths as raw bytes (names need not be UTF-8).
    @discardableResult
    public func restore(from sourcePath: String, to targetPath: String, paths: [[UInt8]]) throws(Errno) -> Summary {
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
        try restore(from: source, to: target, paths: paths.map { Array($0.utf8) })
    }

    /// Restores `paths` (raw bytes) from the directory `source` into the directory `target`.
    @discardableResult
    public func restore(from source: Int32, to target: Int32, paths: [[UInt8]]) throws(Errno) -> Summary {
        let split = try paths.map { (path) throws(Errno) -> [[UInt8]] in
            let components = path.split(separator: Run.slash).map(Array.init).filter { $0 != Run.dot }
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
        var run = Run(excludedAtRoot: excludedAtRoot, exclusions: exclusions, targetRoot: target, progress: progress)
        for components in split {
            let sourceCursor = try DirectoryCursor(at: source)
            let targetCursor = try DirectoryCursor(at: target)
            if components.isEmpty {
                try run.restoreTree(source: sourceCursor, target: targetCursor, prefix: [], atRoot: true)
            } else {
                try run.restorePath(components, source: sourceCursor, target: targetCursor)
            }
        }
        return run.summary
    }
}

/// The state of one restore: the summary and the hard links seen.
private struct Run {
    let excludedAtRoot: Set<[UInt8]>
    let exclusions: SnapshotExclusions
    let targetRoot: Int32
    let progress: ProgressMeter?
    var summary = TreeRestore.Summary()
    /// Source (st_dev, st_ino) of multiply-linked files → their restored path below the
    /// target and the identity of the file restored there.
    var restoredInodes: [DirectoryCursor.Identity: (path: [[UInt8]], restored: DirectoryCursor.Identity)] = [:]

    static let dot = Array(".".utf8)
    static let slash = UInt8(ascii: "/")

    init(excludedAtRoot: Set<[UInt8]>, exclusions: SnapshotExclusions, targetRoot: Int32, progress: ProgressMeter?) {
        self.excludedAtRoot = excludedAtRoot
        self.exclusions = exclusions
        self.targetRoot = targetRoot
        self.progress = progress
    }

    /// What `restoreEntry` left to do: nothing more, or walk into a directory.
    enum Next {
        case done
        case directory
    }

    /// Restores one path, creating (or replacing) the directories above it as in the source.
    /// The cursors start at the roots.
    mutating func restorePath(_ components: [[UInt8]], source: DirectoryCursor, target: DirectoryCursor) throws(Errno) {
        for component in components.dropLast() {
            let existing = try TreeDiff.status(target.fd, component)
            var created = false
            if existing == nil || !existing!.isDirectory {
                if existing != nil { try removeTree(target.fd, component) }
                try Self.check(component.withCString { mkdirat(target.fd, $0, 0o700) })
                summary.directoriesCreated += 1
                created = true
            }
            try source.descend(component)
            try target.descend(component)
            if created { try applyMetadata(from: source.fd, to: target.fd) }
        }
        let name = components.last!
        let path = components
        if try restoreEntry(source.fd, target.fd, name, path: path) == .directory {
            try source.descend(name)
            try target.descend(name)
            try restoreTree(source: source, target: target, prefix: path, atRoot: false)
        }
    }

    /// One directory being restored: its source names left to do.
    struct Level {
        let names: [[UInt8]]
        var next = 0
        let prefix: [[UInt8]]
    }

    /// Makes the directory at `target` equal to the one at `source`, everything below it
    /// included, and then its own metadata. Iterative: the cursors move down and back up.
    mutating func restoreTree(source: DirectoryCursor, target: DirectoryCursor, prefix: [[UInt8]], atRoot: Bool) throws(Errno) {
        var levels = [try startLevel(source: source, target: target, prefix: prefix, atRoot: atRoot)]
        while !levels.isEmpty {
            let top = levels.count - 1
            guard levels[top].next < levels[top].names.count else {
                try applyMetadata(from: source.fd, to: target.fd)
                levels.removeLast()
                if !levels.isEmpty {
                    try source.ascend()
                    try target.ascend()
                }
                continue
            }
            let name = levels[top].names[levels[top].next]
            levels[top].next += 1
            let path = levels[top].prefix + [name]
            if try restoreEntry(source.fd, target.fd, name, path: path) == .directory {
                try source.descend(name)
                do throws(Errno) { try target.descend(name) } catch {
                    try source.ascend()
                    throw error
                }
                levels.append(try startLevel(source: source, target: target, prefix: path, atRoot: false))
            }
        }
    }

    /// Removes what the target directory has and the source does not; lists the source.
    mutating func startLevel(source: DirectoryCursor, target: DirectoryCursor, prefix: [[UInt8]], atRoot: Bool) throws(Errno) -> Level {
        var sourceNames = Set(try DirectoryNames.names(in: source.fd))
        var targetNames = Set(try DirectoryNames.names(in: target.fd))
        if atRoot {
            sourceNames.subtract(excludedAtRoot)
            targetNames.subtract(excludedAtRoot)
        }
        if !exclusions.isEmpty {
            // The path of this directory, while a path pattern can still match its entries.
            let path: [UInt8]? = exclusions.needsPath(forEntriesWithSlashes: prefix.count)
                ? Array(prefix.joined(separator: [Self.slash])) : nil
            let rules = exclusions
            let excluded = { (name: [UInt8]) -> Bool in
                (name + [0]).withUnsafeBufferPointer { bytes in
                    bytes.withMemoryRebound(to: CChar.self) { rules.excludes($0.baseAddress!, in: path) }
                }
            }
            sourceNames = sourceNames.filter { !excluded($0) }
            targetNames = targetNames.filter { !excluded($0) }
        }
        for name in targetNames.subtracting(sourceNames).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            try removeTree(target.fd, name)
        }
        return Level(names: sourceNames.sorted(by: { $0.lexicographicallyPrecedes($1) }), prefix: prefix)
    }

    /// Restores the entry `name` of `sourceDir` into `targetDir`. A directory is only made
    /// (empty, private) and returned as `.directory`: the caller walks into it.
    mutating func restoreEntry(_ sourceDir: Int32, _ targetDir: Int32, _ name: [UInt8], path: [[UInt8]]) throws(Errno) -> Next {
        progress?.tick()
        guard let source = try TreeDiff.status(sourceDir, name) else { throw Errno.noSuchFileOrDirectory }
        var target = try TreeDiff.status(targetDir, name)
        if let existing = target, existing.fileType != source.fileType {
            try removeTree(targetDir, name)
            target = nil
        }
        switch source.fileType {
        case S_IFDIR:
            if target == nil {
                try Self.check(name.withCString { mkdirat(targetDir, $0, 0o700) })
                summary.directoriesCreated += 1
            }
            return .directory
        case S_IFREG:
            // An empty -wal or -shm that a snapshot added beside a closed database is none.
            if target == nil && SQLiteCompanion.isPlaceholder(name, source) { return .done }
            let key = DirectoryCursor.Identity(source)
            if source.st_nlink > 1, let first = restoredInodes[key],
               try link(first, to: targetDir, name, existing: target) {
                return .done  // the link shares the first path's metadata
            }
            let input = try FileContent.openRegular(sourceDir, name)
            defer { close(input) }
            var restored: DirectoryCursor.Identity
            if target != nil, let existing = try Self.openExisting(targetDir, name, type: S_IFREG) {
                defer { close(existing) }
                var status = stat()
                try Self.check(fstat(existing, &status))
                if status.st_size == source.st_size, try FileContent.equal(input, existing) {
                    try applyMetadata(from: input, to: existing)
                    summary.unchanged += 1
                    restored = DirectoryCursor.Identity(status)
                    if source.st_nlink > 1 { restoredInodes[key] = (path, restored) }
                    return .done
                }
            }
            restored = try replace(name, in: targetDir) { (temporary) throws(Errno) -> DirectoryCursor.Identity in
                let output = temporary.withCString { snapfs_openat(targetDir, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
                if output < 0 { throw Errno.current }
                defer { close(output) }
                try Self.copy(input, to: output)
                try applyMetadata(from: input, to: output)
                var status = stat()
                try Self.check(fstat(output, &status))
                return DirectoryCursor.Identity(status)
            }
            summary.written += 1
            if source.st_nlink > 1 { restoredInodes[key] = (path, restored) }
        case S_IFLNK:
            let wanted = try TreeDiff.linkTarget(sourceDir, name)
            if target != nil, try TreeDiff.linkTarget(targetDir, name) == wanted,
               let existing = try Self.openExisting(targetDir, name, type: S_IFLNK) {
                defer { close(existing) }
                try applyMetadata(of: source, sourceDir, name, toPathDescriptor: existing, targetDir, name)
                summary.unchanged += 1
            } else {
                _ = try replace(name, in: targetDir) { (temporary) throws(Errno) in
                    try Self.check(wanted.withCString { w in temporary.withCString { symlinkat(w, targetDir, $0) } })
                    guard let made = try Self.openExisting(targetDir, temporary, type: S_IFLNK) else { throw Errno.staleNFSFileHandle }
                    defer { close(made) }
                    try applyMetadata(of: source, sourceDir, name, toPathDescriptor: made, targetDir, temporary)
                }
                summary.written += 1
            }
        default:
            if target != nil, target!.st_rdev == source.st_rdev,
               let existing = try Self.openExisting(targetDir, name, type: source.fileType) {
                defer { close(existing) }
                try applyMetadata(of: source, sourceDir, name, toPathDescriptor: existing, targetDir, name)
                summary.unchanged += 1
            } else {
                _ = try replace(name, in: targetDir) { (temporary) throws(Errno) in
                    try Self.check(temporary.withCString { mknodat(targetDir, $0, source.st_mode & S_IFMT | 0o600, source.st_rdev) })
                    guard let made = try Self.openExisting(targetDir, temporary, type: source.fileType) else { throw Errno.staleNFSFileHandle }
                    defer { close(made) }
                    try applyMetadata(of: source, sourceDir, name, toPathDescriptor: made, targetDir, temporary)
                }
                summary.written += 1
            }
        }
        return .done
    }

    /// Opens the entry `name` of `dir` without following it or blocking on it: `O_PATH` for
    /// symlinks and special files, `O_RDONLY` for regular files. Nil if it is not of `type`
    /// (any more) or gone.
    static func openExisting(_ dir: Int32, _ name: [UInt8], type: mode_t) throws(Errno) -> Int32? {
        let flags = type == S_IFREG ? O_RDONLY | O_NONBLOCK | O_NOCTTY : SNAPFS_O_PATH
        let fd = name.withCString { snapfs_openat(dir, $0, flags | O_NOFOLLOW | O_CLOEXEC, 0) }
        if fd < 0 {
            if errno == ENOENT || errno == ELOOP || errno == ENXIO { return nil }
            throw Errno.current
        }
        var status = stat()
        if fstat(fd, &status) != 0 || status.fileType != type {
            close(fd)
            return nil
        }
        return fd
    }

    /// Owner, extended attributes, permission bits and times of the source object open at
    /// `source` onto the target object open at `target` (both real descriptors: directories
    /// and regular files). In this order: chown clears set-id bits and file capabilities, and
    /// every change moves ctime but only futimens sets mtime.
    func applyMetadata(from source: Int32, to target: Int32) throws(Errno) {
        var wanted = stat()
        try Self.check(fstat(source, &wanted))
        var present = stat()
        try Self.check(fstat(target, &present))
        if wanted.st_uid != present.st_uid || wanted.st_gid != present.st_gid {
            // Only root may give files away; an ordinary user restores what they may.
            if fchown(target, wanted.st_uid, wanted.st_gid) != 0 && !(errno == EPERM && geteuid() != 0) { throw Errno.current }
        }
        try ExtendedAttributeList.replace(ofObject: target, with: ExtendedAttributeList.all(ofObject: source))
        try Self.check(fchmod(target, wanted.st_mode & 0o7777))
        var times = [wanted.st_atim, wanted.st_mtim]
        try Self.check(futimens(target, &times))
    }

    /// The same for a symlink or special file, open `O_PATH` at `object` (the entry `targetName`
    /// of `targetDir`, checked to be of the right type): owner through the descriptor, mode
    /// through `/proc/self/fd` (which leads to the object, not to a name); for a symlink the
    /// attributes and times by name without following (a symlink cannot be opened otherwise).
    func applyMetadata(of source: stat, _ sourceDir: Int32, _ sourceName: [UInt8],
                       toPathDescriptor object: Int32, _ targetDir: Int32, _ targetName: [UInt8]) throws(Errno) {
        var present = stat()
        try Self.check(fstat(object, &present))
        if source.st_uid != present.st_uid || source.st_gid != present.st_gid {
            let result = "".withCString { fchownat(object, $0, source.st_uid, source.st_gid, SNAPFS_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
            if result != 0 && !(errno == EPERM && geteuid() != 0) { throw Errno.current }
        }
        let wanted = try ExtendedAttributeList.all(in: sourceDir, sourceName)
        var times = [source.st_atim, source.st_mtim]
        if present.isSymlink {
            let attributes = try ExtendedAttributeList.all(in: targetDir, targetName)
            if !wanted.elementsEqual(attributes, by: { $0.name == $1.name && $0.value == $1.value }) {
                let wantedNames = Set(wanted.map(\.name))
                for attribute in attributes where !wantedNames.contains(attribute.name) {
                    try ignoringUnsupported { () throws(Errno) in try ExtendedAttributeList.remove(in: targetDir, targetName, attribute: attribute.name) }
                }
                for attribute in wanted {
                    try ignoringUnsupported { () throws(Errno) in
                        try ExtendedAttributeList.set(in: targetDir, targetName, attribute: attribute.name, value: attribute.value)
                    }
                }
            }
            try Self.check(targetName.withCString { utimensat(targetDir, $0, &times, AT_SYMLINK_NOFOLLOW) })
        } else {
            try ExtendedAttributeList.replace(ofObject: object, with: wanted)
            try Self.check("/proc/self/fd/\(object)".withCString { chmod($0, source.st_mode & 0o7777) })
            try Self.check("/proc/self/fd/\(object)".withCString { utimensat(AT_FDCWD, $0, &times, 0) })
        }
    }

    /// Makes `name` in `targetDir` a hard link to the file restored earlier at `first`, if
    /// that file is still there (reached without following symlinks) and still the one
    /// restored; false if not (the caller then restores a copy).
    mutating func link(_ first: (path: [[UInt8]], restored: DirectoryCursor.Identity), to targetDir: Int32,
                       _ name: [UInt8], existing: stat?) throws(Errno) -> Bool {
        if let existing, DirectoryCursor.Identity(existing) == first.restored {
            summary.unchanged += 1
            return true
        }
        guard let parent = try TreeDiff.openParent(targetRoot, first.path) else { return false }
        defer { close(parent) }
        guard let status = try TreeDiff.status(parent, first.path.last!), status.isRegular,
              DirectoryCursor.Identity(status) == first.restored else { return false }
        do {
            _ = try replace(name, in: targetDir) { (temporary) throws(Errno) in
                // linkat without AT_SYMLINK_FOLLOW links the entry itself, never a symlink's target.
                try Self.check(first.path.last!.withCString { f in temporary.withCString { linkat(parent, f, targetDir, $0, 0) } })
                guard let made = try TreeDiff.status(targetDir, temporary), DirectoryCursor.Identity(made) == first.restored else {
                    throw Errno.staleNFSFileHandle
                }
            }
        } catch .staleNFSFileHandle {
            return false
        }
        summary.linked += 1
        return true
    }

    /// Creates the new entry under a temporary name with `create`, then renames it over
    /// `name`; on failure the temporary entry is removed and `name` is untouched.
    func replace<T>(_ name: [UInt8], in dir: Int32, create: ([UInt8]) throws(Errno) -> T) throws(Errno) -> T {
        let temporary = Array(".snapfs-restore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))".utf8)
        do {
            let result = try create(temporary)
            try Self.check(temporary.withCString { t in name.withCString { renameat(dir, t, dir, $0) } })
            return result
        } catch {
            _ = temporary.withCString { unlinkat(dir, $0, 0) }
            throw error
        }
    }

    /// Copies the bytes of `input` (from its start) to `output`, then syncs `output`.
    static func copy(_ input: Int32, to output: Int32) throws(Errno) {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var offset: off_t = 0
        while true {
            let n = try syscallRetrying { buffer.withUnsafeMutableBytes { pread(input, $0.baseAddress!, $0.count, offset) } }
            if n == 0 { break }
            offset += off_t(n)
            var written = 0
            while written < n {
                written += try syscallRetrying { buffer.withUnsafeBytes { write(output, $0.baseAddress! + written, n - written) } }
            }
        }
        // Errors of the write-back (ENOSPC, EIO) show up here at the latest.
        try syscallRetrying { fsync(output) }
    }

    /// Removes `name` from `dir`, with everything below it if it is a directory.
    mutating func removeTree(_ dir: Int32, _ name: [UInt8]) throws(Errno) {
        guard try TreeDiff.status(dir, name) != nil else { return }
        try name.withCString { (cName) throws(Errno) in try TreeRemover.remove(parent: dir, entry: cName) }
        summary.removed += 1
        progress?.tick()
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
