import Synchronization
import SystemPackage

/// snapfs's write-back page cache: file data at page granularity, keyed by a file key
/// (the FUSE node id), in front of a ``CacheBackingStore``.
///
/// Reads see every buffered write, as if it had reached the backing file. Dirty data
/// reaches the backing file on ``writeBack(_:backing:)``/``fsync(_:dataOnly:backing:)``/
/// ``writeBackAll(backing:)``, when a writer pushes dirty data past the dirty limit
/// (back-pressure: that writer writes back, oldest file first) and when room is needed
/// for a new page and no clean page can be evicted. Dirty data is never dropped except by
/// ``truncate(_:to:backing:)`` (past the new end) and ``discard(_:)``; a failed write-back
/// leaves it dirty, remembers the error for the file, and reports it once through
/// ``fsync(_:dataOnly:backing:)`` or ``takeError(_:)``, as Linux does — unless a later
/// write-back wrote all of the file's dirty data first (then nothing was lost, unlike on
/// Linux, where the failed pages are gone).
///
/// Truncates reach the backing file at once (so its size never exceeds the logical size
/// and its bytes are valid wherever no page is cached); reads of pages that are not
/// cached go straight to the backing file and are not cached (the kernel's page cache
/// already keeps what applications re-read). Clean pages left by write-back stay cached
/// until evicted, least recently used first.
///
/// Locking: one mutex guards the whole cache and is held across the backing I/O of
/// write-back, partial-page loads and reads. Back-pressure and eviction move data of any
/// file, so per-file locks would need a lock order between files (or try-locks and
/// fallbacks); one lock makes every operation atomic with respect to all others, which is
/// what a snapshot's flush needs, at the price of serializing cache operations.
/// `fsync` syncs the backing file without the lock. Lock order: this mutex is a leaf —
/// nothing else is locked while it is held, and backing stores must not call back in.
///
/// Memory: pages live in 1 MiB mappings made as the cache first grows and kept until it
/// is gone, so page memory is bounded by `capacity` (rounded up to 1 MiB); plus small
/// per-page bookkeeping. Coalesced write-back writes contiguous pages from where they are
/// (one vectored write), without copying them.
public final class PageCache: Sendable {
    public static let pageSize = PageTable.pageSize

    public struct Configuration: Sendable, Equatable {
        /// Most bytes of cached pages (clean and dirty); at least one page.
        public var capacity: Int
        /// Dirty bytes past which a writer writes back synchronously; at most `capacity`.
        public var dirtyLimit: Int
        /// Largest single backing write of coalesced dirty pages; at least one page.
        public var maxWriteBack: Int

        public init(capacity: Int = 256 << 20, dirtyLimit: Int? = nil, maxWriteBack: Int = 1 << 20) {
            self.capacity = capacity
            self.dirtyLimit = dirtyLimit ?? capacity / 2
            self.maxWriteBack = maxWriteBack
        }
    }

    public struct Statistics: Sendable, Equatable {
        public var dirtyBytes = 0
        public var cachedBytes = 0
        /// Page lookups (reads, partial-page writes) answered from the cache.
        public var hits = 0
        /// Page lookups that went to the backing file.
        public var misses = 0
        /// Backing writes made by write-back, and the bytes they wrote.
        public var writeBacks = 0
        public var writeBackBytes = 0
        /// Write-backs of a file that failed.
        public var writeBackErrors = 0
        /// Large writes of whole pages that went straight to the backing file, and their bytes.
        public var writeThroughs = 0
        public var writeThroughBytes = 0
    }

    public let configuration: Configuration
    private let table: Mutex<PageTable>

    public init(_ configuration: Configuration = Configuration()) {
        precondition(configuration.capacity >= Self.pageSize, "page cache capacity below one page")
        precondition(configuration.maxWriteBack >= Self.pageSize, "write-back size below one page")
        self.configuration = configuration
        let capacityPages = configuration.capacity / Self.pageSize
        table = Mutex(PageTable(
            capacityPages: capacityPages,
            dirtyLimitPages: min(capacityPages, max(0, configuration.dirtyLimit / Self.pageSize)),
            maxWriteBackPages: configuration.maxWriteBack / Self.pageSize))
    }

    /// Writes of whole pages this large go straight to the backing file (after the cache
    /// drops the pages they replace): buffering gains nothing for them, and costs a copy.
    public static let writeThroughMinimum = 64 << 10

    /// Buffers `data` at `offset` and marks it dirty; returns the bytes taken (short only
    /// if room could not be made part-way; the error is thrown if none could be taken).
    /// A large write of whole pages is written through instead (see ``writeThroughMinimum``).
    ///
    /// Writes of one file must not overlap each other while they run (the kernel holds the
    /// inode's lock across a buffered write, so they do not).
    ///
    /// `holding`: a write the backing file refuses (a full disk, a quota) is still taken
    /// while the cache has room — past the dirty limit, and instead of a large write's
    /// write-through. For writes that are the kernel's write-back (its write-back cache
    /// acknowledged them to the application long before): a refused one would be lost,
    /// while one held here waits, dirty, for space, and its failure is reported by fsync
    /// and close as any other.
    public func write(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64,
                      backing: some CacheBackingStore, holding: Bool = false) throws(Errno) -> Int {
        precondition(offset >= 0)
        let data = CallerBuffer(data)
        var taken = 0
        if data.value.count >= Self.writeThroughMinimum, offset % Int64(Self.pageSize) == 0, data.value.count % Self.pageSize == 0 {
            do throws(Errno) {
                taken = try writeThrough(file, data.value, at: offset, backing: backing)
            } catch where holding {
                taken = 0
            }
            // Refused part-way (a full disk): the rest is buffered, if the cache holds refused writes.
            if taken == data.value.count || !holding { return taken }
        }
        let rest = CallerBuffer(UnsafeRawBufferPointer(rebasing: data.value[taken...]))
        do throws(Errno) {
            return taken + (try table.withLock { (table) throws(Errno) -> Int in
                try table.write(file, rest.value, at: offset + Int64(taken), backing: backing, holding: holding)
            })
        } catch {
            if taken > 0 { return taken }
            throw error
        }
    }

    /// A write that goes straight to the backing file unless the cache holds dirty data of
    /// `file` (then it is an ordinary ``write(_:_:at:backing:)``): for descriptors whose close does not
    /// reach the daemon, so that nothing they wrote waits in the cache for a write-back
    /// whose failure no close could report. Writes to one file arrive one at a time (the
    /// kernel holds the inode's lock across a write request), so the file cannot become
    /// dirty between the check and the write.
    public func writeThroughUnlessDirty(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64,
                                        backing: some CacheBackingStore) throws(Errno) -> Int {
        precondition(offset >= 0)
        let data = CallerBuffer(data)
        let clean = table.withLock { (table) -> Bool in
            guard !table.isDirty(file) else { return false }
            // Clean pages only: dropping them, partial ones included, loses nothing.
            table.dropPages(file, touching: offset, count: data.value.count)
            return true
        }
        guard clean else { return try write(file, data.value, at: offset, backing: backing) }
        return try writeToBacking(file, data.value, at: offset, backing: backing)
    }

    /// The backing write runs without the lock, so other files' cache work goes on; no
    /// write-back can touch the range meanwhile, since its pages are gone from the cache.
    private func writeThrough(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64,
                              backing: some CacheBackingStore) throws(Errno) -> Int {
        table.withLock { $0.dropPages(file, covering: offset, count: data.count) }
        return try writeToBacking(file, data, at: offset, backing: backing)
    }

    /// Writes `data` to the backing file, whose pages in the range are gone from the cache.
    private func writeToBacking(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64,
                                backing: some CacheBackingStore) throws(Errno) -> Int {
        var done = 0
        do throws(Errno) {
            while done < data.count {
                let n = try backing.write(file, UnsafeRawBufferPointer(rebasing: data[done...]), at: offset + Int64(done))
                if n <= 0 { break }
                done += n
            }
        } catch {
            if done == 0 {
                table.withLock { $0.wroteThrough(file, end: nil, bytes: 0) }
                throw error
            }
        }
        let written = done
        table.withLock { $0.wroteThrough(file, end: offset + Int64(written), bytes: written) }
        return written
    }

    /// Buffers `data` at the file's logical end (O_APPEND), atomically with respect to
    /// other appends; returns the offset it went to and the bytes taken.
    public func append(_ file: UInt64, _ data: UnsafeRawBufferPointer,
                       backing: some CacheBackingStore) throws(Errno) -> (offset: Int64, count: Int) {
        let data = CallerBuffer(data)
        return try table.withLock { (table) throws(Errno) -> (offset: Int64, count: Int) in
            let offset = try table.size(file, backing: backing)
            return (offset, try table.write(file, data.value, at: offset, backing: backing))
        }
    }

    /// Whether `file` has data not yet written back.
    public func isDirty(_ file: UInt64) -> Bool {
        table.withLock { $0.isDirty(file) }
    }

    /// Whether anything is cached or remembered for `file` (else reads and sizes can go
    /// straight to the backing file).
    public func holds(_ file: UInt64) -> Bool {
        table.withLock { $0.holds(file) }
    }

    /// The logical size, and whether the file has dirty data (else the backing file's
    /// times are the file's times).
    public func sizeAndDirtiness(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) -> (size: Int64, dirty: Bool) {
        try table.withLock { (table) throws(Errno) -> (size: Int64, dirty: Bool) in
            (try table.size(file, backing: backing), table.isDirty(file))
        }
    }

    /// Reads what the file holds with every buffered write applied; short only at the
    /// logical end of the file.
    public func read(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                     backing: some CacheBackingStore) throws(Errno) -> Int {
        precondition(offset >= 0)
        let buffer = CallerBuffer(buffer)
        return try table.withLock { (table) throws(Errno) -> Int in try table.read(file, into: buffer.value, at: offset, backing: backing) }
    }

    /// The logical size: the backing size or the end of buffered data, whichever is larger.
    public func size(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) -> Int64 {
        try table.withLock { (table) throws(Errno) -> Int64 in try table.size(file, backing: backing) }
    }

    /// Truncates the backing file now and drops cached data past the new end.
    public func truncate(_ file: UInt64, to size: Int64, backing: some CacheBackingStore) throws(Errno) {
        precondition(size >= 0)
        try table.withLock { (table) throws(Errno) in try table.truncate(file, to: size, backing: backing) }
    }

    /// Writes back the file's dirty pages (no sync). On error the data stays dirty, the
    /// error is remembered for the next fsync/close, and thrown.
    public func writeBack(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) {
        try table.withLock { (table) throws(Errno) in try table.writeBack(file, backing: backing) }
    }

    /// fsync(2)/fdatasync(2): writes back, then syncs the backing file. Throws a
    /// write-back error (this one's or a remembered earlier one, which is then reported
    /// and forgotten) or the sync's error.
    public func fsync(_ file: UInt64, dataOnly: Bool, backing: some CacheBackingStore) throws(Errno) {
        try table.withLock { (table) throws(Errno) in try table.writeBackReportingOnce(file, backing: backing) }
        do throws(Errno) {
            try backing.sync(file, dataOnly: dataOnly)
        } catch {
            _ = takeError(file)
            throw error
        }
        if let error = takeError(file) { throw error }
    }

    /// close(2): writes back (no sync) and throws the write-back error not yet reported —
    /// this one's or an earlier one's — reporting it once.
    public func flush(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) {
        try table.withLock { (table) throws(Errno) in
            try table.writeBackReportingOnce(file, backing: backing)
            if let error = table.takeError(file) { throw error }
        }
    }

    /// The write-back error not yet reported for `file`, now reported (for close).
    public func takeError(_ file: UInt64) -> Errno? {
        table.withLock { $0.takeError(file) }
    }

    /// Drops everything cached for `file`, dirty data included (unlinked and closed).
    public func discard(_ file: UInt64) {
        table.withLock { $0.discard(file) }
    }

    /// Writes back `file`, then forgets its clean pages and its size, after the backing
    /// file was changed without the cache (fallocate, copy_file_range, copy-up, restore).
    public func invalidate(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) {
        try table.withLock { (table) throws(Errno) in try table.invalidate(file, backing: backing) }
    }

    /// Writes back every file (syncfs, snapshot, unmount); returns the files that failed
    /// and their errors, which stay remembered for their fsync/close as well.
    public func writeBackAll(backing: some CacheBackingStore) -> [UInt64: Errno] {
        table.withLock { $0.writeBackAll(backing: backing) }
    }

    /// Files whose oldest dirty data became dirty at `instant` or earlier, oldest first.
    public func dirtyFiles(olderThan instant: ContinuousClock.Instant) -> [UInt64] {
        table.withLock { $0.dirtyFiles(olderThan: instant) }
    }

    public var statistics: Statistics {
        table.withLock { table in
            var statistics = table.statistics
            statistics.dirtyBytes = table.dirtyBytes
            statistics.cachedBytes = table.cachedBytes
            return statistics
        }
    }
}

/// A caller's buffer handed into the cache's lock: used there and never kept, so no
/// other isolation domain can see it.
private struct CallerBuffer<Buffer>: @unchecked Sendable {
    let value: Buffer
    init(_ value: Buffer) { self.value = value }
}
