import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// One thread's share of a clone: it lists directories and recreates their entries, with
/// buffers of its own so that no entry costs an allocation.
final class CloneWorker {
    let run: CloneRun
    var statistics = CloneStatistics()
    /// The status of the source entry the last ``cloneEntry(_:type:in:status:)`` cloned.
    var lastStatus = stat()
    let attributes = ExtendedAttributes()
    let entries = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
    /// A symlink target (at most PATH_MAX - 1 bytes) and its terminator.
    private let linkTarget = UnsafeMutablePointer<CChar>.allocate(capacity: Int(PATH_MAX) + 1)
    private let sourcePath = ProcEntryPath()
    private let targetPath = ProcEntryPath()
    private var copyBuffer: UnsafeMutableRawBufferPointer?

    init(run: CloneRun) {
        self.run = run
    }

    deinit {
        attributes.deallocate()
        entries.deallocate()
        linkTarget.deallocate()
        copyBuffer?.deallocate()
        sourcePath.deallocate()
        targetPath.deallocate()
    }

    /// The job of one directory: open it (the top comes open), recreate its entries,
    /// queue its subdirectories, and finish its part.
    func process(_ directory: CloneDirectory) {
        var opened = directory.parent == nil
        if let parent = directory.parent {
            if !run.failed {
                do throws(Errno) {
                    try directory.open(noAccessTime: run.noAccessTime, attributeBuffers: attributes)
                    opened = true
                } catch {
                    run.fail(error)
                }
            }
            parent.releaseSource()
        }
        if opened {
            do throws(Errno) {
                let top = directory.parent == nil
                try DirectoryEntries.forEach(in: directory.source, buffer: entries) { (name, type) throws(Errno) in
                    if run.failed { throw .canceled }
                    if top && run.isExcludedAtTop(name) { return }
                    if run.excluding && run.isExcluded(name, in: directory) { return }
                    try cloneEntry(name, type: type, in: directory, status: nil)
                }
                try SQLiteCompanion.complete(directory)
            } catch {
                run.fail(error)
            }
            directory.releaseSource()
        }
        directory.finishPart(of: run)
    }

    /// Recreates the entry `name` of `directory`'s source in its target. `status` is the
    /// entry's `lstat` if the caller has it; `type` its `d_type`.
    func cloneEntry(_ name: UnsafePointer<CChar>, type: UInt8, in directory: CloneDirectory, status: stat?) throws(Errno) {
        switch type {
        case DirectoryEntries.Kind.directory:
            try makeDirectory(name, in: directory)
        case DirectoryEntries.Kind.regular:
            try cloneFile(name, in: directory, status: status)
        case DirectoryEntries.Kind.symlink:
            try cloneSymlink(name, in: directory, status: status)
        case DirectoryEntries.Kind.unknown:
            var status = stat()
            try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW))
            try cloneEntry(name, type: DirectoryEntries.Kind.of(mode: status.st_mode), in: directory, status: status)
        default:
            try cloneSpecial(name, in: directory, status: status)
        }
    }

    /// Makes the (still empty, private) copy of a subdirectory and queues it.
    private func makeDirectory(_ name: UnsafePointer<CChar>, in directory: CloneDirectory) throws(Errno) {
        if !directory.isLinkOrigin || directory.depth + 1 >= CloneDirectory.deepWalkDepth {
            return try cloneDeep(name, in: directory)
        }
        try syscall(mkdirat(directory.target, name, 0o700))
        let child = CloneDirectory(parent: directory, name: name)
        if run.excluding { child.path = run.exclusions.childPath(name, of: directory.path) }
        directory.adopt()
        statistics.directories += 1
        run.stack.push(child)
    }

    private func cloneFile(_ name: UnsafePointer<CChar>, in directory: CloneDirectory, status known: stat?) throws(Errno) {
        if run.method == .hardlink {
            var status = known ?? stat()
            if known == nil { try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW)) }
            lastStatus = status
            // Objects in ``CloneRun/copyInstead`` fall through to the copy below, and so do
            // SQLite's -wal, -shm and -journal files: the snapshot's own copies can be made
            // immutable, and a reader of the snapshot never shares them with the live database.
            if (run.copyInstead.isEmpty || !run.copyInstead.contains(BackingKey(status))) && !SQLiteCompanion.isCompanionName(name) {
                try syscall(linkat(directory.source, name, directory.target, name, 0))
                statistics.files += 1
                statistics.bytes += Int64(status.st_size)
                SQLiteCompanion.note(name, status: status, source: -1, in: directory, noAccessTime: run.noAccessTime)
                return
            }
        }

        // O_NONBLOCK: should a FIFO have taken the name since it was listed, do not hang on it.
        let source = try syscall(snapfs_openat(directory.source, name,
                                               O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | run.noAccessTime, 0))
        defer { close(source) }
        var status = stat()
        try syscall(fstat(source, &status))
        lastStatus = status
        guard status.st_mode & 0o170000 == 0o100000 else {
            return try cloneEntry(name, type: DirectoryEntries.Kind.of(mode: status.st_mode), in: directory, status: status)
        }
        statistics.files += 1
        statistics.bytes += Int64(status.st_size)

        var origin: HardLinkOrigin?
        if status.st_nlink > 1 && directory.isLinkOrigin {
            let key = InodeKey(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
            let (found, first) = run.hardLinks.withLock { table in
                if let found = table[key] { return (found, false) }
                let made = HardLinkOrigin(directory: directory, name: name)
                table[key] = made
                return (made, true)
            }
            if !first {
                try link(name, in: directory, to: found)
                SQLiteCompanion.note(name, status: status, source: source, in: directory, noAccessTime: run.noAccessTime)
                return
            }
            origin = found
        }
        do throws(Errno) {
            let target = try syscall(snapfs_openat(directory.target, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                                   status.st_mode & 0o777))
            defer { close(target) }
            if run.method == .reflink {
                try syscall(snapfs_ficlone(target, source))
            } else {
                try copyContents(from: source, to: target, status: status)
            }
            try applyFileMetadata(status, from: source, to: target)
            SQLiteCompanion.note(name, status: status, source: source, in: directory, noAccessTime: run.noAccessTime)
            if SQLiteCompanion.isJournalName(name) {
                directory.journals.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
            } else if origin == nil && SQLiteCompanion.isCompanionName(name) {
                try Seal.apply(target)
            }
            origin?.state.store(HardLinkOrigin.made, ordering: .releasing)
        } catch {
            origin?.state.store(HardLinkOrigin.failed, ordering: .releasing)
            throw error
        }
    }

    /// Another name of a file already cloned (or being cloned by another thread) in this run.
    private func link(_ name: UnsafePointer<CChar>, in directory: CloneDirectory, to origin: HardLinkOrigin) throws(Errno) {
        while true {
            let state = origin.state.load(ordering: .acquiring)
            if state == HardLinkOrigin.made { break }
            // The thread making it has recorded its error; ours is a consequence.
            if state == HardLinkOrigin.failed || run.failed { throw .canceled }
            sched_yield()
        }
        let (originDirectory, opened) = try openTarget(of: origin.directory, from: directory)
        defer { if opened { close(originDirectory) } }
        _ = try origin.name.withUnsafeBufferPointer { (originName) throws(Errno) in
            try syscall(linkat(originDirectory, originName.baseAddress!, directory.target, name, 0))
        }
    }

    /// A descriptor of `wanted`'s copy. The copies of `current` and its ancestors are open
    /// (their subtrees are unfinished); from the nearest of them that is also an ancestor of
    /// `wanted`, walk down by name. Returns whether the descriptor was opened here.
    private func openTarget(of wanted: CloneDirectory, from current: CloneDirectory) throws(Errno) -> (Int32, Bool) {
        var openAncestors = Set<ObjectIdentifier>()
        var walk: CloneDirectory? = current
        while let directory = walk {
            openAncestors.insert(ObjectIdentifier(directory))
            walk = directory.parent
        }
        var path: [CloneDirectory] = []
        var start = wanted
        while !openAncestors.contains(ObjectIdentifier(start)), let parent = start.parent {
            path.append(start)
            start = parent
        }
        if path.isEmpty { return (start.target, false) }
        var fd = start.target
        for directory in path.reversed() {
            let next = directory.name.withUnsafeBufferPointer {
                snapfs_openat(fd, $0.baseAddress!, SNAPFS_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            }
            let failure = errno
            if fd != start.target { close(fd) }
            if next < 0 { throw Errno(rawValue: failure) }
            fd = next
        }
        return (fd, true)
    }

    /// Owner, xattrs, mode, times of a new regular file, skipping the calls whose result
    /// creation already gave (the owner is ours, the mode is what umask left).
    private func applyFileMetadata(_ status: stat, from source: Int32, to target: Int32) throws(Errno) {
        var chowned = false
        if status.st_uid != run.effectiveUser || status.st_gid != run.effectiveGroup {
            try syscall(fchown(target, status.st_uid, status.st_gid))
            chowned = true
        }
        let hadAttributes = try attributes.copy(from: .descriptor(source), to: .descriptor(target))
        let mode = status.st_mode & 0o7777
        if chowned || hadAttributes || !run.creationGives(mode, from: status.st_mode & 0o777) {
            try syscall(fchmod(target, mode))
        }
        var times = (status.st_atim, status.st_mtim)
        _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
            try syscall(futimens(target, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
        }
    }

    private func cloneSymlink(_ name: UnsafePointer<CChar>, in directory: CloneDirectory, status known: stat?) throws(Errno) {
        var status = stat()
        if let known { status = known } else { try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW)) }
        lastStatus = status
        let length = try syscall(readlinkat(directory.source, name, linkTarget, Int(PATH_MAX)))
        if length >= Int(PATH_MAX) { throw .fileNameTooLong }
        linkTarget[length] = 0
        try syscall(symlinkat(linkTarget, directory.target, name))
        try applyEntryMetadata(status, name, in: directory, setMode: false)
        statistics.symlinks += 1
    }

    /// Device nodes, FIFOs and sockets.
    private func cloneSpecial(_ name: UnsafePointer<CChar>, in directory: CloneDirectory, status known: stat?) throws(Errno) {
        var status = stat()
        if let known { status = known } else { try syscall(fstatat(directory.source, name, &status, AT_SYMLINK_NOFOLLOW)) }
        lastStatus = status
        try syscall(mknodat(directory.target, name, (status.st_mode & 0o170000) | 0o600, status.st_rdev))
        try applyEntryMetadata(status, name, in: directory, setMode: true)
        statistics.specials += 1
    }

    /// Metadata of an entry that cannot be opened for I/O, by name (never following it).
    private func applyEntryMetadata(_ status: stat, _ name: UnsafePointer<CChar>, in directory: CloneDirectory,
                                    setMode: Bool) throws(Errno) {
        if status.st_uid != run.effectiveUser || status.st_gid != run.effectiveGroup {
            try syscall(fchownat(directory.target, name, status.st_uid, status.st_gid, AT_SYMLINK_NOFOLLOW))
        }
        _ = try attributes.copy(from: .path(sourcePath.set(directory.source, name)),
                                to: .path(targetPath.set(directory.target, name)))
        if setMode {
            try syscall(fchmodat(directory.target, name, status.st_mode & 0o7777, 0))
        }
        var times = (status.st_atim, status.st_mtim)
        _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
            try syscall(utimensat(directory.target, name, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self),
                                  AT_SYMLINK_NOFOLLOW))
        }
    }

    /// Copies the content, only the data extents of a sparse file (holes stay holes).
    private func copyContents(from source: Int32, to target: Int32, status: stat) throws(Errno) {
        let size = Int64(status.st_size)
        if size == 0 { return }
        if Int64(status.st_blocks) * 512 >= size {
            try copyRange(from: source, to: target, offset: 0, length: size)
            return
        }
        var position: Int64 = 0
        while position < size {
            let data = lseek(source, off_t(position), SNAPFS_SEEK_DATA)
            if data < 0 {
                if errno == ENXIO { break }  // only a hole is left
                throw .current
            }
            var hole = lseek(source, data, SNAPFS_SEEK_HOLE)
            if hole < 0 { throw .current }
            hole = min(hole, off_t(size))
            if hole <= data { break }
            try copyRange(from: source, to: target, offset: Int64(data), length: Int64(hole - data))
            position = Int64(hole)
        }
        try syscall(ftruncate(target, off_t(size)))
    }

    private func copyRange(from source: Int32, to target: Int32, offset: Int64, length: Int64) throws(Errno) {
        try FileCopy.copyRange(from: source, to: target, offset: offset, length: length, buffer: &copyBuffer)
    }

    /// Clones the subdirectory `name` of `directory` and everything below it on this thread,
    /// with a cursor on each side: one descriptor per side and no recursion, however deep.
    /// (A user can make a tree tens of thousands of levels deep in seconds; the parallel walk
    /// holds descriptors for every unfinished level.) Files below keep their hard links only
    /// with the hard-link method; with the others each name gets its own copy.
    private func cloneDeep(_ name: UnsafePointer<CChar>, in directory: CloneDirectory) throws(Errno) {
        try syscall(mkdirat(directory.target, name, 0o700))
        statistics.directories += 1
        let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name)))
        let source = try DirectoryCursor(at: directory.source, bytes, extraFlags: run.noAccessTime)
        let target = try DirectoryCursor(at: directory.target, bytes)
        let path = run.excluding ? run.exclusions.childPath(name, of: directory.path) : nil
        var levels: [DeepLevel] = [try DeepLevel(source: source, target: target, name: name, path: path, worker: self)]
        while !levels.isEmpty {
            let last = levels.count - 1
            if run.failed { throw .canceled }
            guard let entry = levels[last].entries.popLast() else {
                let level = levels.removeLast()
                level.directory.source = source.fd
                level.directory.target = target.fd
                defer { level.directory.source = -1; level.directory.target = -1 }
                try SQLiteCompanion.complete(level.directory)
                try level.directory.applyMetadata()
                if !levels.isEmpty {
                    try source.ascend()
                    try target.ascend()
                }
                continue
            }
            let directory = levels[last].directory
            directory.source = source.fd
            directory.target = target.fd
            defer { directory.source = -1; directory.target = -1 }
            try entry.name.withUnsafeBufferPointer { (entryName) throws(Errno) in
                let cName = entryName.baseAddress!
                var type = entry.type
                if type == DirectoryEntries.Kind.unknown {
                    var status = stat()
                    try syscall(fstatat(source.fd, cName, &status, AT_SYMLINK_NOFOLLOW))
                    type = DirectoryEntries.Kind.of(mode: status.st_mode)
                }
                guard type == DirectoryEntries.Kind.directory else {
                    return try cloneEntry(cName, type: type, in: directory, status: nil)
                }
                try syscall(mkdirat(target.fd, cName, 0o700))
                statistics.directories += 1
                let childName = Array(entry.name.dropLast().map { UInt8(bitPattern: $0) })
                try source.descend(childName)
                do throws(Errno) { try target.descend(childName) } catch {
                    try source.ascend()
                    throw error
                }
                let path = run.excluding ? run.exclusions.childPath(cName, of: directory.path) : nil
                levels.append(try DeepLevel(source: source, target: target, name: cName, path: path, worker: self))
            }
        }
    }

    /// One directory of a deep walk: its metadata (applied when it is done) and the entries
    /// left to clone.
    private struct DeepLevel {
        let directory: CloneDirectory
        var entries: [(name: [CChar], type: UInt8)] = []

        init(source: DirectoryCursor, target: DirectoryCursor, name: UnsafePointer<CChar>, path: [UInt8]?,
             worker: CloneWorker) throws(Errno) {
            directory = CloneDirectory(parent: nil, name: name, isLinkOrigin: false)
            directory.path = path
            directory.status = source.status
            directory.attributes = try worker.attributes.read(.descriptor(source.fd))
            var found: [(name: [CChar], type: UInt8)] = []
            let run = worker.run
            try DirectoryEntries.forEach(in: source.fd, buffer: worker.entries) { (name, type) throws(Errno) in
                if run.excluding && run.exclusions.excludes(name, in: path) { return }
                found.append((Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)), type))
            }
            entries = found
        }
    }
}

/// Builds `/proc/self/fd/DIR/NAME` in a fixed buffer: the way to name an entry relative to
/// a directory descriptor for the xattr calls, which have no `*at` form.
struct ProcEntryPath {
    // "/proc/self/fd/" (14) + up to 10 digits + "/" + NAME_MAX (255) + NUL.
    private let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: 288)

    func deallocate() { buffer.deallocate() }

    func set(_ directory: Int32, _ name: UnsafePointer<CChar>) -> UnsafePointer<CChar> {
        var index = 0
        for byte in "/proc/self/fd/".utf8 {
            buffer[index] = CChar(bitPattern: byte)
            index += 1
        }
        var digits = 1
        var value = directory / 10
        while value > 0 { digits += 1; value /= 10 }
        value = directory
        for position in stride(from: index + digits - 1, through: index, by: -1) {
            buffer[position] = CChar(48 + value % 10)
            value /= 10
        }
        index += digits
        buffer[index] = 0x2F
        index += 1
        let length = min(strlen(name), 288 - index - 1)
        buffer.advanced(by: index).update(from: name, count: length)
        buffer[index + length] = 0
        return UnsafePointer(buffer)
    }
}
