import CLinux
import Glibc
import SnapFSBacking
import SnapFSCache
import Synchronization
import SystemPackage

/// snapfs's page cache on the data path of regular files.
///
/// With the kernel's write-back cache (the default) the kernel batches the writes: its
/// write-backs go straight to the backing file, and the cache holds only what the file
/// refuses (``holdRefusedWriteBack(_:_:offset:context:)``), with the file's later
/// write-backs behind it. Writes that bypass the kernel's cache (files opened while the
/// disk is short of space), and every write without the kernel's cache, go into the cache.
///
/// Writes into the cache (``PageCache``) reach the backing file by write-back: at
/// fsync, at close (so close reports a failed write-back, and only open files hold dirty
/// data), when the dirty limit is passed, when dirty data is older than the dirty age
/// (the flusher thread), before every snapshot (with the freeze gate closed, so the
/// snapshot holds every write acknowledged before its trigger) and at unmount.
///
/// Not cached: SQLite journals and WALs (commit detection reads them as the application
/// wrote them, and SQLite syncs them at every commit anyway), and files in `.snapshots`.
/// A database file is cached; its dirty data is written back before its commit is looked
/// at. Operations the cache does not model (fallocate, copy_file_range, SEEK_DATA/HOLE)
/// write the file back first and forget its cached pages after.
extension SnapFileSystem {
    /// Whether `inode`'s data goes through the cache.
    @inline(__always)
    func caches(_ inode: Inode) -> Bool {
        cache != nil && inode.isRegularFile && !inode.inSnapshotView && inode.sqlite.role.load(ordering: .relaxed) == 0
    }

    /// The cache, if it holds anything of `inode` (else the backing file is the whole truth).
    @inline(__always)
    func cacheHolding(_ inode: Inode) -> PageCache? {
        guard let cache, inode.cache.used.load(ordering: .relaxed), cache.holds(inode.id) else { return nil }
        return cache
    }

    /// Whether close(2) of `file` must reach the daemon (to write back and report errors).
    public func closeNeedsDaemon(_ file: OpenFile) -> Bool {
        // A journal the kernel writes may end unseen: its close looks at it.
        file.kernelWrites || (caches(file.inode) && file.flags & O_ACCMODE != O_RDONLY && !file.writesThrough)
    }

    /// Whether a file created with `flags` writes through until it is reopened. A file just
    /// created is mostly written once, from start to end, and closed: buffering gains it
    /// nothing (the writes are not overwritten), while a cached writable file costs a
    /// request at every close (FLUSH, which writes back and reports errors) — one of six
    /// per small file created. Appends keep the cache (it positions them).
    func writesThroughWhenCreated(_ flags: Int32) -> Bool {
        cache != nil && !options.kernelWritebackCache && flags & O_ACCMODE != O_RDONLY && flags & O_APPEND == 0
    }

    /// Whether the page cache holds data of `inode` not yet in its backing file: then its
    /// size and times come from the cache, and change when it is written back, so the
    /// kernel must not keep them.
    public func hasDirtyData(_ inode: UInt64) -> Bool {
        guard cache != nil, let node = try? inodes.inode(inode) else { return false }
        return cacheHoldingDirty(node) != nil
    }

    /// The cache, if it holds data of `inode` not yet written back (reads must see it;
    /// other reads go to the backing file, which updates its access time as reads do).
    @inline(__always)
    func cacheHoldingDirty(_ inode: Inode) -> PageCache? {
        guard let cache, inode.cache.used.load(ordering: .relaxed), cache.isDirty(inode.id) else { return nil }
        return cache
    }

    /// Whether `file` is opened with direct I/O, past the kernel's page cache: SQLite
    /// journals, WALs unless the kernel may cache them (`SnapFileSystem+CachedLogs`), and
    /// (see ``bypassesKernelCacheWhenFirstOpened(_:flags:)``) the files of an inode first
    /// opened for writing while the backing filesystem was short of space. A journal's
    /// writes are commit points, seen (and snapshotted) inside the application's write, so
    /// with the kernel's write-back cache they must not wait in the kernel; and without it,
    /// direct I/O makes each write one request (the kernel splits a cached write that ends
    /// inside a page it does not hold) and spares the `security.capability` lookup cached
    /// writes make after every attribute refresh.
    public func writesBypassKernelCache(_ file: OpenFile) -> Bool {
        if file.kernelDirect { return true }
        switch SQLiteRole(rawValue: file.inode.sqlite.role.load(ordering: .relaxed)) {
        case .journal: return true
        case .wal: return !logsInKernelCache
        default: return false
        }
    }

    /// Chosen when the first file of `node` is opened, for all its open files: with the
    /// kernel's write-back cache, a write is acknowledged before it reaches snapfs, so on a
    /// full disk the application would learn of the failure only at fsync or close (and
    /// the kernel drops the pages snapfs's cache could not take). Where that could happen
    /// soon — less free space than snapfs's cache plus the kernel's dirty pages of a mount
    /// could hold, ``SpaceWatch/reserve`` — files opened for writing are served with
    /// direct I/O: each `write()` comes to snapfs and fails with ENOSPC itself, as on ext4.
    func bypassesKernelCacheWhenFirstOpened(_ node: Inode, flags: Int32) -> Bool {
        options.kernelWritebackCache && flags & O_ACCMODE != O_RDONLY && node.isRegularFile && space.isShort()
    }

    /// A write-back from the kernel's cache that the backing file refused (a full disk, a
    /// quota, past the largest file size): held in snapfs's cache, so that no byte the kernel handed over is lost;
    /// `fsync` and `close` report the error until it is written, and the file's later
    /// write-backs queue behind it there. (Commit detection sees a SQLite log's held bytes
    /// once they are in the file: the next write it gets reads the log from there.)
    func holdRefusedWriteBack(_ file: OpenFile, _ data: UnsafeRawBufferPointer, offset: Int64,
                              context: RequestContext) throws(Errno) -> Int {
        guard let cache else { throw Errno.noSpace }
        return try CallerIdentity.allocating(as: context.uid) { () throws(Errno) in
            try cachedWrite(cache, file, data, offset: offset)
        }
    }

    /// A write into the cache; returns the bytes taken.
    func cachedWrite(_ cache: PageCache, _ file: OpenFile, _ data: UnsafeRawBufferPointer, offset: Int64) throws(Errno) -> Int {
        let node = file.inode
        if !node.cache.used.load(ordering: .relaxed) { node.cache.used.store(true, ordering: .relaxed) }
        let taken: Int
        // Without kernel write-back caching the kernel leaves O_APPEND positioning to the
        // filesystem (the backing descriptor cannot do it: write-back writes at offsets).
        if file.flags & O_APPEND != 0 && !options.kernelWritebackCache {
            taken = try cache.append(node.id, data, backing: cacheStore).count
        } else if file.writesThrough {
            taken = try cache.writeThroughUnlessDirty(node.id, data, at: offset, backing: cacheStore)
        } else {
            // With the kernel's write-back cache, a write to a file it caches is its
            // write-back, acknowledged to the application already: held if refused.
            let holding = options.kernelWritebackCache && !writesBypassKernelCache(file)
            taken = try cache.write(node.id, data, at: offset, backing: cacheStore, holding: holding)
        }
        node.cache.writeTime.store(Self.realtimeNanoseconds(), ordering: .relaxed)
        if file.flags & O_DSYNC != 0 {
            // O_SYNC / O_DSYNC: durable when the write returns.
            try cache.fsync(node.id, dataOnly: file.flags & O_SYNC != O_SYNC, backing: cacheStore)
        }
        return taken
    }

    /// A read through the cache.
    func cachedRead(_ cache: PageCache, _ file: OpenFile, offset: Int64, size: Int) throws(Errno) -> ReadData {
        var failure: Errno?
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            do throws(Errno) {
                count = try cache.read(file.inode.id, into: UnsafeMutableRawBufferPointer(buffer), at: offset, backing: cacheStore)
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return .bytes(bytes)
    }

    /// What getattr shows of a file with cached data: its logical size, and while data is
    /// dirty, the time of its last cached write as modification and change time (after
    /// write-back, the backing file's times, which are later). Returns whether it is dirty.
    @discardableResult
    func applyCachedAttributes(of inode: Inode, to st: inout stat) throws(Errno) -> Bool {
        guard let cache = cacheHolding(inode) else { return false }
        let (size, dirty) = try cache.sizeAndDirtiness(inode.id, backing: cacheStore)
        st.st_size = off_t(size)
        let written = inode.cache.writeTime.load(ordering: .relaxed)
        guard dirty, written > 0 else { return dirty }
        let time = timespec(tv_sec: Int(written / 1_000_000_000), tv_nsec: Int(written % 1_000_000_000))
        if (st.st_mtim.tv_sec, st.st_mtim.tv_nsec) < (time.tv_sec, time.tv_nsec) { st.st_mtim = time }
        if (st.st_ctim.tv_sec, st.st_ctim.tv_nsec) < (time.tv_sec, time.tv_nsec) { st.st_ctim = time }
        return true
    }

    /// Before an operation on the backing file that the cache does not model: its dirty
    /// data goes first. Returns the cache to ``forgetCachedPages(of:)`` after the operation.
    func writeBackBeforeDirectChange(_ inode: Inode) throws(Errno) -> PageCache? {
        guard let cache = cacheHolding(inode) else { return nil }
        try cache.writeBack(inode.id, backing: cacheStore)
        return cache
    }

    /// After the backing file changed behind the cache: its clean pages and size are stale.
    func forgetCachedPages(of inode: Inode, in cache: PageCache?) throws(Errno) {
        try cache?.invalidate(inode.id, backing: cacheStore)
    }

    /// close(2): writes the file back and reports a write-back error not yet reported.
    func cachedFlush(_ file: OpenFile) throws(Errno) {
        try cacheHolding(file.inode)?.flush(file.inode.id, backing: cacheStore)
    }

    /// The last descriptor of an open file is going: its data is written back, or dropped
    /// if the file is unlinked and nothing else has it open.
    func cachedRelease(_ file: OpenFile) {
        guard let cache = cacheHolding(file.inode) else { return }
        var st = stat()
        if fstat(file.fd, &st) == 0 && st.st_nlink == 0 && file.inode.openFileCount <= 1 {
            cache.discard(file.inode.id)
            return
        }
        do throws(Errno) {
            try cache.writeBack(file.inode.id, backing: cacheStore)
        } catch {
            logger.error("cannot write back \(describe(file.inode)) at close: \(error); the data stays cached and write-back is retried")
        }
    }

    /// The kernel lets go of an inode: nothing of it stays cached. Dirty data is left only
    /// where write-back failed at close; it gets one more try.
    func forgetCachedData(of inode: Inode) {
        guard let cache = cacheHolding(inode) else { return }
        do throws(Errno) {
            try cache.writeBack(inode.id, backing: cacheStore)
        } catch {
            logger.critical("dropping the cached data of \(describe(inode)), which could not be written back: \(error)")
        }
        cache.discard(inode.id)
    }

    /// Writes back every file with dirty data (before a snapshot, at unmount). Throws,
    /// naming the files, if some could not be written; their data stays cached.
    public func writeBackCache() throws(CacheWriteBackFailure) {
        guard let cache else { return }
        let failed = cache.writeBackAll(backing: cacheStore)
        guard !failed.isEmpty else { return }
        let files = failed.sorted { $0.key < $1.key }.map { (id, error) in
            "\((try? inodes.inode(id)).map { describe($0) } ?? "node \(id)") (\(error))"
        }
        throw CacheWriteBackFailure(errno: failed.values.first!, files: files)
    }

    /// A file's path for messages: relative to the root when the backing object has one.
    func describe(_ inode: Inode) -> String {
        let found: String?? = try? inode.withFD { (fd) throws(Errno) -> String? in proc.target(of: fd) }
        guard let target = found ?? nil else { return "node \(inode.id)" }
        let prefix = rootPath.hasSuffix("/") ? rootPath : rootPath + "/"
        return target.hasPrefix(prefix) ? String(target.dropFirst(prefix.count)) : target
    }

    /// `key: value` lines for `snapfs status`.
    public func cacheStatusLines() -> [String] {
        // In front of snapfs's cache: the kernel's (the default), or none, with passthrough.
        let kernel = options.kernelWritebackCache
            ? "kernel-cache: write-back (direct I/O for files opened while the backing filesystem has less than \(space.reserve) bytes free)"
            : "kernel-cache: none (every write a request; passthrough \(options.kernelPassthrough ? "on" : "off"))"
        guard let cache else { return [kernel, "cache: off"] }
        let s = cache.statistics
        return [
            kernel,
            "cache: \(options.cache.size) bytes, dirty limit \(cache.configuration.dirtyLimit), dirty age \(options.cache.dirtyAgeMs) ms",
            "cache dirty: \(s.dirtyBytes)",
            "cache cached: \(s.cachedBytes)",
            "cache hits: \(s.hits)",
            "cache misses: \(s.misses)",
            "cache write-backs: \(s.writeBacks) (\(s.writeBackBytes) bytes)",
            "cache write-back errors: \(s.writeBackErrors)",
        ]
    }

    /// Starts the thread that writes back dirty data older than the dirty age, and retries
    /// write-backs that failed.
    public func startCacheFlusher() {
        guard cache != nil else { return }
        BackgroundThread.start { self.runCacheFlusher() }
    }

    private func runCacheFlusher() {
        guard let cache else { return }
        let age = max(1, options.cache.dirtyAgeMs)
        let tick = max(20, min(age / 4, 1000))
        var reported: Set<UInt64> = []
        while true {
            BackgroundThread.sleep(milliseconds: tick)
            let due = ContinuousClock.now - .milliseconds(age)
            for file in cache.dirtyFiles(olderThan: due) {
                do throws(Errno) {
                    try cache.writeBack(file, backing: cacheStore)
                    reported.remove(file)
                } catch {
                    // Said once per file until a write-back of it works again.
                    if reported.insert(file).inserted {
                        let name = (try? inodes.inode(file)).map { describe($0) } ?? "node \(file)"
                        logger.error("cannot write back \(name): \(error); the data stays cached and write-back is retried")
                    }
                }
            }
        }
    }

    static func realtimeNanoseconds() -> Int64 {
        var now = timespec()
        // The clock filesystems stamp files with, so a write-back never seems earlier.
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

/// Write-back of the cache failed for some files (their data stays cached).
public struct CacheWriteBackFailure: Error, Sendable {
    public let errno: Errno
    /// The files, each with its error.
    public let files: [String]

    public var message: String {
        "cannot write back the cached data of \(files.count) file\(files.count == 1 ? "" : "s"): \(files.joined(separator: ", "))"
    }
}

/// What the page cache keeps per inode (``Inode/cache``).
struct CacheNodeState: ~Copyable, Sendable {
    /// The page cache has taken data of this file (so reads and sizes must ask it).
    let used = Atomic<Bool>(false)
    /// When a write last went into the page cache (ns since the epoch; 0: none since the
    /// last explicit time change): the modification time until write-back moves it on.
    let writeTime = Atomic<Int64>(0)
    /// With the kernel's write-back cache: the modification time the kernel (or the
    /// application) last set, as given, whatever it is (past 2262 it does not fit in 64
    /// bits of nanoseconds; before 1970 it is negative); nil: none. The kernel keeps a
    /// regular file's times itself and hands them over by setattr just before its fsync and
    /// close requests; the data it wrote may reach snapfs after that setattr (its page
    /// write-back is not ordered with it), and reaches the backing file at that fsync or
    /// close. So there, after writing back, snapfs puts this time back: the backing file,
    /// and every snapshot of it, shows the time the application saw.
    let kernelModificationTime = Mutex<timespec?>(nil)
}
