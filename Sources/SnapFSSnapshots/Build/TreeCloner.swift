import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// Recreates a directory tree as a new directory: the tree of a hard-link, reflink or copy
/// snapshot.
///
/// Every entry keeps its type, mode (setuid, setgid and sticky included), owner, access and
/// modification times, extended attributes (user., trusted., security., POSIX ACLs), symlink
/// target and device number; only regular files differ by method (see `CloneMethod`). With
/// `reflink` and `copy`, names hard-linked to each other in the source stay hard-linked to
/// each other in the clone. Symlinks are never followed: every call is relative to a
/// directory descriptor. Directories are spread over `threads` threads.
public struct TreeCloner: Sendable {
    public let method: CloneMethod
    public let threads: Int

    /// Threads of a snapshot. More than the cores: with a cold cache each `linkat`/`openat`
    /// waits for its inode to be read, and more threads keep the disk busy meanwhile.
    /// `bench/run.py --snapshots` on 2 cores, 100,000 files, 2 threads against 8, interleaved:
    /// hardlink on ext4 1.03 s → 0.96 s, reflink on XFS 4.0 s → 3.3 s.
    public static let defaultThreads = 8

    /// With `hardlink`: objects to copy instead of linking (files the kernel reads directly,
    /// see ``SnapshotState/passthroughObjects``).
    public let copyInstead: Set<BackingKey>

    /// Paths left out of the tree (``SnapshotExclusions``); not of ``clone(paths:from:into:name:)``.
    public let exclusions: SnapshotExclusions

    public init(method: CloneMethod, threads: Int = TreeCloner.defaultThreads, copyInstead: Set<BackingKey> = [],
                exclusions: SnapshotExclusions = .none) {
        self.method = method
        self.threads = max(threads, 1)
        self.copyInstead = copyInstead
        self.exclusions = exclusions
    }

    /// Recreates the tree of `source` (a directory descriptor) as the new directory `name` in `targetParent`,
    /// skipping `excludeAtTop` names in the top directory only.
    ///
    /// `directories` in the result counts the new top directory too. On any error, what was
    /// made of `name` is removed and the first error thrown; `name` must not exist (EEXIST).
    public func clone(source: Int32, into targetParent: Int32, name: String,
                      excludeAtTop: Set<String>) throws(Errno) -> CloneStatistics {
        let run = CloneRun(method: method, excludedAtTop: excludeAtTop, copyInstead: copyInstead, exclusions: exclusions)
        let top = try makeTop(of: source, in: targetParent, name: name, run: run)
        top.path = exclusions.topPath
        run.stack.push(top)
        run.stack.run(threads: threads) { next in
            let worker = CloneWorker(run: run)
            while let directory = next() { worker.process(directory) }
            run.add(worker.statistics)
        }
        if let error = run.error {
            try? TreeRemover.remove(parent: targetParent, name: name)
            throw error
        }
        var totals = run.totals
        totals.directories += 1
        return totals
    }

    /// Only the given relative paths (regular files; their parent directories are created with the source's metadata),
    /// for per-database snapshots.
    ///
    /// A path naming a symlink or special file clones that entry (never what it points to);
    /// a directory is refused with EISDIR, a path with an empty, `.` or `..` component or a
    /// leading `/` with EINVAL, a missing one with ENOENT. Repeated paths are taken once.
    public func clone(paths: [String], from source: Int32, into targetParent: Int32,
                      name: String) throws(Errno) -> CloneStatistics {
        var unique: [String] = []
        var seen = Set<String>()
        for path in paths where seen.insert(path).inserted {
            let components = path.split(separator: "/", omittingEmptySubsequences: false)
            if components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) { throw .invalidArgument }
            unique.append(path)
        }
        let run = CloneRun(method: method, excludedAtTop: [])
        let top = try makeTop(of: source, in: targetParent, name: name, run: run)
        let worker = CloneWorker(run: run)
        var directories: [String: CloneDirectory] = ["": top]
        var made: [CloneDirectory] = [top]
        do throws(Errno) {
            for path in unique {
                let components = path.split(separator: "/", omittingEmptySubsequences: false)
                var directory = top
                var key = ""
                for component in components.dropLast() {
                    key += "/" + component
                    if let found = directories[key] {
                        directory = found
                        continue
                    }
                    let child = try String(component).withCName { (name) throws(Errno) -> CloneDirectory in
                        try syscall(mkdirat(directory.target, name, 0o700))
                        return CloneDirectory(parent: directory, name: name)
                    }
                    made.append(child)
                    try child.open(noAccessTime: run.noAccessTime, attributeBuffers: worker.attributes)
                    directories[key] = child
                    directory = child
                }
                try String(components.last!).withCName { (name) throws(Errno) in
                    var status = stat()
                    try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW))
                    if status.st_mode & 0o170000 == 0o040000 { throw .isDirectory }
                    try worker.cloneEntry(name, type: DirectoryEntries.Kind.of(mode: status.st_mode), in: directory, status: status)
                }
            }
            // Setting a directory's metadata does not touch its parent, so any order works.
            for directory in made.reversed() { try directory.applyMetadata() }
        } catch {
            for directory in made { directory.closeDescriptors() }
            try? TreeRemover.remove(parent: targetParent, name: name)
            throw error
        }
        for directory in made { directory.closeDescriptors() }
        var totals = worker.statistics
        totals.directories += made.count
        return totals
    }

    /// Opens the source, makes the private (0700) top directory and reads the source's
    /// metadata. The new directory is cleaned of what it inherited from `targetParent`
    /// (default ACL, setgid), which would otherwise pass on to everything made inside it.
    private func makeTop(of source: Int32, in targetParent: Int32, name: String, run: CloneRun) throws(Errno) -> CloneDirectory {
        if name.isEmpty || name == "." || name == ".." || name.utf8.contains(0x2F) { throw .invalidArgument }
        let top = CloneDirectory(parent: nil, name: "")
        top.source = try syscall(snapfs_openat(source, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC | run.noAccessTime, 0))
        do throws(Errno) {
            try syscall(fstat(top.source, &top.status))
            try name.withCName { (name) throws(Errno) in _ = try syscall(mkdirat(targetParent, name, 0o700)) }
        } catch {
            top.closeDescriptors()
            throw error
        }
        do throws(Errno) {
            top.target = try syscall(snapfs_openat(targetParent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
            try ExtendedAttributes.removeInheritedACLs(top.target)
            try syscall(fchmod(top.target, 0o700))
            let buffers = ExtendedAttributes()
            defer { buffers.deallocate() }
            top.attributes = try buffers.read(.descriptor(top.source))
        } catch {
            top.closeDescriptors()
            try? TreeRemover.remove(parent: targetParent, name: name)
            throw error
        }
        return top
    }
}
