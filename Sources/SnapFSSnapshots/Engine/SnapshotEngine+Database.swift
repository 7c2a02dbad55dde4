import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SystemPackage

/// A database file to snapshot on its own, open for reading; closed when released.
public final class DatabaseSnapshotSource: @unchecked Sendable {
    public let file: Int32
    /// Relative to the root of the tree; the snapshot keeps it.
    public let path: String
    public let pageSize: Int
    /// WAL mode: the log, open for reading, and its committed state.
    public let walFile: Int32
    public let wal: WALTracker?
    /// The database file says WAL (header bytes 18/19 = 2): the copy must say rollback.
    public let walFormat: Bool
    /// WAL mode: an earlier snapshot of this database (its name) holding the committed
    /// state through frame `frame` of the same log generation; the new snapshot starts
    /// from it and lays over only the frames after `frame`.
    public let base: (snapshot: String, frame: UInt32)?
    /// Rollback modes: the size the database header says (pages × page size), when the
    /// header's size is valid. SQLite may cut the file to it only after the commit (VACUUM
    /// does); a copy is cut at once.
    public let committedSize: Int64?
    /// Rollback modes, cloning strategies: where the database was written since its last
    /// snapshot; those blocks are copied, not shared (``WrittenRanges``).
    package var writtenSinceLastSnapshot: WrittenRanges?

    /// Takes ownership of `file` and `walFile` (-1 for none).
    public init(file: Int32, path: String, pageSize: Int, walFile: Int32 = -1, wal: WALTracker? = nil,
                walFormat: Bool = false, base: (snapshot: String, frame: UInt32)? = nil, committedSize: Int64? = nil) {
        self.walFormat = walFormat || wal != nil
        self.base = base
        self.committedSize = committedSize
        self.file = file
        self.path = path
        self.pageSize = pageSize
        self.walFile = walFile
        self.wal = wal
    }

    deinit {
        close(file)
        if walFile >= 0 { close(walFile) }
    }
}

/// Snapshots of one database at a SQLite commit (`--sqlite-scope database`): the database
/// file alone, at its path inside the tree, so the cost does not grow with the rest of it.
///
/// Rollback modes: the file as it is (at the commit it holds the whole transaction, and
/// the journal is not taken). WAL mode: the file with the newest committed frame of every
/// page laid over it, cut to the commit's size and marked as a rollback-journal database
/// (header bytes 18/19 = 1), so that `sqlite3 SNAPSHOT/path/db` opens it read-only with no
/// `-wal` or `-shm` and sees exactly the committed transactions.
extension SnapshotEngine {
    /// Runs `body` with no change in progress and none starting (other snapshots wait too).
    public func whileFrozen<E: Error>(_ body: () throws(E) -> Void) throws(E) {
        try serial.withLock { (_: inout Void) throws(E) in
            try state.gate.frozen { () throws(E) in try body() }
        }
    }

    /// Takes the snapshot of one database. Not with the freeze gate closed, unless inside
    /// ``whileFrozen(_:)``(`alreadySerial`).
    @discardableResult
    public func takeDatabase(_ source: DatabaseSnapshotSource, trigger: Trigger, info: SQLiteCommitInfo,
                             alreadySerial: Bool = false) throws(SnapshotFailure) -> SnapshotMetadata {
        // Hooks only when asked for commit snapshots too (`hooks_on_commits`).
        let metadata = try withHooks(trigger, label: nil, { (_) throws(SnapshotFailure) -> SnapshotMetadata in
            do throws(SnapshotFailure) {
                if alreadySerial { return try buildDatabase(source, trigger: trigger, info: info) }
                return try serial.withLock { (_: inout Void) throws(SnapshotFailure) -> SnapshotMetadata in
                    try buildDatabase(source, trigger: trigger, info: info)
                }
            } catch {
                counts.countFailed(trigger.kind, error)
                throw error
            }
        }, ended: { ("created", $0.name) })
        counts.countMade(trigger.kind)
        logger.debug("snapshot \(metadata.name) of \(info.database) (\(info.journalMode) #\(info.sequence)), \(metadata.durationMs) ms")
        announce(metadata.name)
        pruneIfDue(after: metadata.name, alreadySerial: alreadySerial)
        return metadata
    }

    /// A name after every name given so far.
    func nextName(after newest: SnapshotName?, label: String?) throws(SnapshotFailure) -> SnapshotName {
        try lastName.withLock { (last: inout SnapshotName?) throws(SnapshotFailure) -> SnapshotName in
            if last == nil { last = newest ?? (try? catalog.newest())?.name }
            if let newest, let current = last, newest > current { last = newest }
            // After the newest durable one too, if newer ones were removed at mount.
            if let floor = durability.floor, last.map({ floor > $0 }) ?? true { last = floor }
            do throws(SnapshotNameError) {
                let name = try SnapshotName.next(after: last, nowMs: Self.wallClockMs(), label: label)
                last = name
                return name
            } catch {
                throw SnapshotFailure(.invalidArgument, error.message)
            }
        }
    }

    private func buildDatabase(_ source: DatabaseSnapshotSource, trigger: Trigger,
                               info: SQLiteCommitInfo) throws(SnapshotFailure) -> SnapshotMetadata {
        let started = Self.monotonicMilliseconds()
        let components = source.path.split(separator: "/").map(String.init)
        guard !components.isEmpty, !components.contains(".."), !components.contains(".") else {
            throw SnapshotFailure(.invalidArgument, "not a path inside the tree: \(source.path)")
        }
        try makeRoom(bytes: copiedBytes(of: source), inodes: Int64(components.count + 1), database: info.database)
        let name = try nextName(after: nil, label: nil)
        let building = SnapshotCatalog.buildingPrefix + name.description
        let directory = catalog.directoryFD
        var linked = false
        var bytes: Int64 = 0
        var moved = false
        do throws(Errno) {
            try syscall(mkdirat(directory, building, 0o700))
            let top = try syscall(snapfs_openat(directory, building, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
            defer { close(top) }
            // `.snapshots` is 0700 with no ACL (made so at mount): `top` inherits nothing.
            let placed = try placeInTree(source, components: components, top: top)
            guard let placed else {
                moved = true
                throw Errno.noSuchFileOrDirectory
            }
            (linked, bytes) = placed
        } catch {
            _ = try? TreeRemover.remove(parent: directory, name: building)
            if moved {
                throw SnapshotFailure(error, "no snapshot of \(source.path): it was moved or replaced while the snapshot was taken")
            }
            throw SnapshotFailure(error, "the snapshot of \(source.path) could not be built: \(error)")
        }
        if linked {
            // The live file now shares its object with the snapshot: copy up before its next change.
            state.sharesObjects.store(true, ordering: .releasing)
            state.generation.wrappingAdd(1, ordering: .acquiringAndReleasing)
        }
        var metadata = SnapshotMetadata(name: name, trigger: trigger, strategy: strategy.rawValue, scope: .files,
                                        paths: [source.path], files: 1, directories: components.count - 1,
                                        bytes: bytes, sqlite: info)
        metadata.durationMs = ((Self.monotonicMilliseconds() - started) * 1000).rounded() / 1000
        try putInPlace(metadata, building: building, what: "the snapshot of \(source.path)")
        return metadata
    }

    /// About the bytes a snapshot of `source` writes: none when it links or clones the
    /// file, else the committed database.
    private func copiedBytes(of source: DatabaseSnapshotSource) -> Int64 {
        if clonesDatabaseFiles { return 0 }
        var st = stat()
        guard fstat(source.file, &st) == 0 else { return 0 }
        if strategy == .hardlink && !source.walFormat && !state.passthroughObjects.withLock({ $0.contains(BackingKey(st)) }) { return 0 }
        if let wal = source.wal, let header = wal.header, wal.committedFrames > 0 {
            return Int64(wal.committedDatabasePages) * Int64(header.pageSize)
        }
        return source.committedSize ?? Int64(st.st_size)
    }

    /// Recreates, in the new private (0700, root) directory `top`, the directories on the
    /// database's path with the owner, mode, ACLs, xattrs and times of the live ones, and
    /// places the database in the last. nil when the live path no longer leads to the
    /// database's file (it was moved or replaced meanwhile): then nothing must be kept.
    ///
    /// The live directories are walked from the backing root by descriptor, never following
    /// a symlink, so a directory swapped for a symlink fails the snapshot rather than lend
    /// it another directory's metadata. A directory's metadata is applied once its one child
    /// exists (a default ACL or setgid bit would pass on to it), and the top's last: until
    /// then nobody but root reaches inside. Two live and two new descriptors at a time, at
    /// any depth.
    private func placeInTree(_ source: DatabaseSnapshotSource, components: [String],
                             top: Int32) throws(Errno) -> (linked: Bool, size: Int64)? {
        let buffers = ExtendedAttributes()
        defer { buffers.deallocate() }
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        var live = try syscall(snapfs_openat(backingFD, ".", flags, 0))
        var made: Int32 = -1   // the copy of `live`; -1 while that is `top`, applied last
        defer {
            close(live)
            if made >= 0 { close(made) }
        }
        let rootMetadata = try DirectoryMetadata(of: live, buffers: buffers)
        var metadata = rootMetadata
        for component in components.dropLast() {
            let nextLive = try syscall(snapfs_openat(live, component, flags, 0))
            close(live)
            live = nextLive
            let nextMetadata = try DirectoryMetadata(of: live, buffers: buffers)
            let parent = made >= 0 ? made : top
            try syscall(mkdirat(parent, component, 0o700))
            let nextMade = try syscall(snapfs_openat(parent, component, flags, 0))
            let previous = made
            made = nextMade
            if previous >= 0 {
                defer { close(previous) }
                try metadata.apply(to: previous, made: 0o700)
                try Seal.apply(previous)
            }
            metadata = nextMetadata
        }
        let placed = try placeDatabase(source, as: components.last!, in: made >= 0 ? made : top)
        // The directory walked must hold the very file snapshotted.
        var found = stat()
        var opened = stat()
        try syscall(fstat(source.file, &opened))
        guard fstatat(live, components.last!, &found, AT_SYMLINK_NOFOLLOW) == 0,
              found.st_dev == opened.st_dev, found.st_ino == opened.st_ino else { return nil }
        if made >= 0 {
            try metadata.apply(to: made, made: 0o700)
            try Seal.apply(made)
        }
        try rootMetadata.apply(to: top, made: 0o700)
        return placed
    }

    /// Puts the database's committed state at `name` in `parent`. Returns whether it is a
    /// hard link to the live file, and its size.
    private func placeDatabase(_ source: DatabaseSnapshotSource, as name: String,
                               in parent: Int32) throws(Errno) -> (linked: Bool, size: Int64) {
        var st = stat()
        try syscall(fstat(source.file, &st))
        if strategy == .hardlink && !source.walFormat && !state.passthroughObjects.withLock({ $0.contains(BackingKey(st)) }) {
            // linkat through /proc/self/fd: the open file, not a name that may have moved.
            try syscall(linkat(AT_FDCWD, "/proc/self/fd/\(source.file)", parent, name, AT_SYMLINK_FOLLOW))
            return (true, Int64(st.st_size))
        }
        let target = try syscall(snapfs_openat(parent, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, st.st_mode & 0o777))
        defer { close(target) }
        let cloning = clonesDatabaseFiles
        // The previous snapshot of a WAL database already holds everything up to its commit,
        // and only the frames after it need laying over a clone of it. But a clone first
        // waits until the source's dirty pages are on the disk, and the previous snapshot's
        // were just written: so its clone pays only when the log holds many pages. Else
        // the live file is cloned (clean between checkpoints) and every committed page laid
        // over it: a snapshot at every commit of one-row transactions on XFS ran at 1,100
        // tx/s so against 800 from the previous snapshot.
        var since: UInt32 = 0
        if cloning, let base = source.base, let wal = source.wal, wal.committedPages.count > Self.pagesWorthCloningTheLastSnapshot {
            let previous = snapfs_openat(catalog.directoryFD, base.snapshot + "/" + source.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
            if previous >= 0 {
                if snapfs_ficlone(target, previous) == 0 { since = base.frame }
                close(previous)
            }
        }
        if since == 0 && (!cloning || !clone(source, into: target, size: Int64(st.st_size), blockSize: Int64(st.st_blksize))) {
            try FileCopy.copyData(from: source.file, to: target, size: Int64(st.st_size))
        }
        var size = Int64(st.st_size)
        if let wal = source.wal, source.walFile >= 0 {
            size = try applyCommittedFrames(of: wal, after: since, from: source.walFile, to: target)
        } else if let committed = source.committedSize, committed > 0, committed < size {
            try syscall(ftruncate(target, off_t(committed)))
            size = committed
        }
        if source.walFormat { try markRollbackFormat(target) }
        try FileCopy.copyExtendedAttributes(from: source.file, to: target)
        // Owner and mode only when they differ: each change is a metadata transaction, and
        // this runs at every commit.
        let made = try FileStatus.of(target)
        if made.st_uid != st.st_uid || made.st_gid != st.st_gid { _ = fchown(target, st.st_uid, st.st_gid) }
        if made.st_mode & 0o7777 != st.st_mode & 0o7777 { try syscall(fchmod(target, st.st_mode & 0o7777)) }
        var times = [st.st_atim, st.st_mtim]
        try syscall(futimens(target, &times))
        return (false, size)
    }

    /// Past this many pages in the log's generation, a WAL database's snapshot starts from
    /// a clone of its previous snapshot rather than of the live file (see `placeDatabase`).
    static let pagesWorthCloningTheLastSnapshot = 128

    /// At most this many bytes of consecutive pages are laid over a WAL snapshot in one write.
    static let bytesPerFrameRun = 256 << 10

    /// Whether a per-database snapshot clones the file (FICLONE and FICLONERANGE) rather than
    /// linking or copying it: with the reflink and btrfs strategies.
    package var clonesDatabaseFiles: Bool { strategy == .reflink || strategy == .btrfs }

    /// Clones the database into the empty `target`, except the blocks written since its
    /// last snapshot, which are copied so that the live file does not share them
    /// (``WrittenRanges``). False if the filesystem refused; `target` is empty then.
    private func clone(_ source: DatabaseSnapshotSource, into target: Int32, size: Int64, blockSize: Int64) -> Bool {
        let own = source.writtenSinceLastSnapshot?.blocks(of: max(blockSize, 512), within: size) ?? []
        if own.isEmpty { return snapfs_ficlone(target, source.file) == 0 }
        var at: Int64 = 0
        var done = true
        for range in own where done {
            if range.lowerBound > at {
                done = snapfs_ficlonerange(target, source.file, UInt64(at), UInt64(range.lowerBound - at)) == 0
            }
            if done { done = copy(range, from: source.file, to: target) }
            at = range.upperBound
        }
        // Length 0: to the end of the source, which need not end on a block.
        if done && at < size { done = snapfs_ficlonerange(target, source.file, UInt64(at), 0) == 0 }
        if done { return true }
        // A filesystem that clones only whole files, or a block size it does not take.
        _ = ftruncate(target, 0)
        return snapfs_ficlone(target, source.file) == 0
    }

    private func copy(_ range: Range<Int64>, from source: Int32, to target: Int32) -> Bool {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(min(Int64(range.count), 1 << 20)), alignment: 4096)
        defer { buffer.deallocate() }
        var at = range.lowerBound
        while at < range.upperBound {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(buffer.count), range.upperBound - at))])
            let n = DescriptorReader(fd: source).read(into: chunk, at: at)
            guard n > 0, (try? writeAll(target, UnsafeRawBufferPointer(rebasing: chunk[0..<n]), at: at)) != nil else { return false }
            at += Int64(n)
        }
        return true
    }

    /// Lays the newest committed frame of every page over `target`, cuts it to the committed
    /// size and marks it a rollback-journal database. Returns the size. Each frame is read
    /// with its header, which must still name its page and carry the generation's salts:
    /// else the log has been restarted over it since the commit (possible when the kernel
    /// writes the log back while the application goes on), and this throws `EAGAIN`.
    private func applyCommittedFrames(of wal: WALTracker, after since: UInt32, from walFile: Int32, to target: Int32) throws(Errno) -> Int64 {
        guard let header = wal.header, wal.committedFrames > 0 else { return Int64(try FileStatus.of(target).st_size) }
        let pageSize = header.pageSize
        let pages = wal.committedDatabasePages
        let laid = wal.committedPages.filter { $0.key <= pages && $0.value > since }.sorted { $0.key < $1.key }
        // Pages with consecutive numbers are written together: one write of a run costs the
        // filesystem far less than one per page (the pages a transaction adds to a table are
        // usually consecutive, at the end of the file).
        let runPages = max(1, Self.bytesPerFrameRun / pageSize)
        let frameBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: WALHeader.frameHeaderSize + pageSize, alignment: 16)
        let run = UnsafeMutableRawBufferPointer.allocate(byteCount: min(runPages, laid.count) * pageSize, alignment: 4096)
        defer {
            frameBytes.deallocate()
            run.deallocate()
        }
        var start = 0
        while start < laid.count {
            var end = start + 1
            while end < laid.count && end - start < runPages && laid[end].key == laid[end - 1].key + 1 { end += 1 }
            for index in start..<end {
                let (number, frame) = laid[index]
                guard DescriptorReader(fd: walFile).read(into: frameBytes, at: header.frameOffset(frame)) == frameBytes.count else { throw Errno.ioError }
                let read = UnsafeRawBufferPointer(frameBytes)
                guard SQLiteFormat.bigEndian32(read, at: 0) == number, SQLiteFormat.bigEndian32(read, at: 8) == header.salt1,
                      SQLiteFormat.bigEndian32(read, at: 12) == header.salt2 else { throw Errno.resourceTemporarilyUnavailable }
                UnsafeMutableRawBufferPointer(rebasing: run[((index - start) * pageSize)...])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: read[WALHeader.frameHeaderSize...]))
            }
            try writeAll(target, UnsafeRawBufferPointer(rebasing: run[0..<((end - start) * pageSize)]), at: Int64(laid[start].key - 1) * Int64(pageSize))
            start = end
        }
        let size = Int64(pages) * Int64(pageSize)
        // Truncating a cloned file costs (extents to unshare); only when it is needed.
        if Int64(try FileStatus.of(target).st_size) != size { try syscall(ftruncate(target, off_t(size))) }
        return size
    }

    /// Header bytes 18/19 = 1: a rollback-journal database, which opens read-only without `-shm`.
    private func markRollbackFormat(_ target: Int32) throws(Errno) {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 2, alignment: 2)
        defer { bytes.deallocate() }
        bytes[0] = 1
        bytes[1] = 1
        try writeAll(target, UnsafeRawBufferPointer(bytes), at: 18)
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < bytes.count {
            let n = try syscallRetrying { pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + done) }
            if n == 0 { throw Errno.noSpace }
            done += n
        }
    }
}
