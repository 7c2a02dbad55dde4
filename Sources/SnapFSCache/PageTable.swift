import Glibc
import SystemPackage

/// The state of a ``PageCache``: page storage, the per-file page maps, the LRU list of
/// clean pages and the accounting. Only ever touched with the cache's mutex held.
///
/// Invariants:
/// - `cachedPages ≤ capacityPages`, and so is the number of slots, each with its own page
///   of storage, so memory stays within `capacityPages` pages.
/// - Clean pages, and only they, are on the LRU list; dirty pages leave the cache only
///   through write-back (or a truncate/discard that makes them meaningless).
/// - The backing file is never longer than the file's logical size (truncates reach it
///   at once, write-back is clipped to the logical size), so backing bytes are valid
///   wherever no page is cached.
/// - Bytes of a cached page past the logical size are zero, so growing the file (write
///   past the end, truncate up) exposes zeros there.
/// - No dirty pages ⇒ the backing file holds everything up to `extent`.
struct PageTable: ~Copyable {
    static let pageSize = 4096
    private static let p = Int64(pageSize)
    private static let none: Int32 = -1

    struct Slot {
        var file: UInt64
        var index: Int64
        var storage: UnsafeMutableRawPointer?
        var dirty: Bool
        var prev: Int32
        var next: Int32
    }

    struct FileState {
        /// Cached pages by page index.
        var pages: [Int64: Int32] = [:]
        /// Indices of the dirty pages.
        var dirty: Set<Int64> = []
        /// End of the data buffered by writes (after truncates): the logical size is
        /// `max(backing size, extent)`.
        var extent: Int64 = 0
        /// The backing file's size, known while the state exists (forgotten after errors).
        var backingSize: Int64?
        /// When the file's oldest dirty page became dirty.
        var dirtySince: ContinuousClock.Instant?
        /// A write-back error not yet reported by fsync/close.
        var error: Errno?

        var isIdle: Bool { pages.isEmpty && error == nil }
    }

    let capacityPages: Int
    let dirtyLimitPages: Int
    let maxWriteBackPages: Int

    private var slots: [Slot] = []
    private var freeSlots: [Int32] = []
    /// Clean pages, least recently used first.
    private var lruHead: Int32 = none
    private var lruTail: Int32 = none
    private var files: [UInt64: FileState] = [:]
    private(set) var cachedPages = 0
    private(set) var dirtyPages = 0
    var statistics = PageCache.Statistics()
    /// Page storage: slot `s` owns page `s % chunkPages` of chunk `s / chunkPages`, for
    /// as long as the cache lives (a slot that is freed and reused keeps its page). Chunks
    /// are mapped as slots are first needed, so memory follows the most pages ever cached,
    /// never more than `capacityPages` (one allocation per page would cost glibc up to a
    /// second page each for the alignment).
    private var chunks: [UnsafeMutableRawPointer] = []
    private static let chunkPages = 256

    init(capacityPages: Int, dirtyLimitPages: Int, maxWriteBackPages: Int) {
        self.capacityPages = capacityPages
        self.dirtyLimitPages = dirtyLimitPages
        self.maxWriteBackPages = maxWriteBackPages
    }

    deinit {
        for chunk in chunks { munmap(chunk, Self.chunkPages * Self.pageSize) }
    }

    /// The page of a slot not made before (`s == slots.count`).
    private mutating func storage(forNewSlot s: Int32) throws(Errno) -> UnsafeMutableRawPointer {
        let chunk = Int(s) / Self.chunkPages
        if chunk == chunks.count {
            let bytes = Self.chunkPages * Self.pageSize
            guard let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  mapped != MAP_FAILED else { throw Errno.noMemory }
            chunks.append(mapped)
        }
        return chunks[chunk] + (Int(s) % Self.chunkPages) * Self.pageSize
    }

    // MARK: Pages and the LRU list

    private mutating func lruRemove(_ s: Int32) {
        let (prev, next) = (slots[Int(s)].prev, slots[Int(s)].next)
        if prev != Self.none { slots[Int(prev)].next = next } else { lruHead = next }
        if next != Self.none { slots[Int(next)].prev = prev } else { lruTail = prev }
        slots[Int(s)].prev = Self.none
        slots[Int(s)].next = Self.none
    }

    private mutating func lruAppend(_ s: Int32) {
        slots[Int(s)].prev = lruTail
        slots[Int(s)].next = Self.none
        if lruTail != Self.none { slots[Int(lruTail)].next = s } else { lruHead = s }
        lruTail = s
    }

    /// A page was used: clean pages move to the most-recently-used end.
    private mutating func touch(_ s: Int32) {
        guard !slots[Int(s)].dirty, lruTail != s else { return }
        lruRemove(s)
        lruAppend(s)
    }

    private func slot(_ file: UInt64, _ index: Int64) -> Int32? {
        files[file]?.pages[index]
    }

    private mutating func markDirty(_ s: Int32) {
        guard !slots[Int(s)].dirty else { return }
        lruRemove(s)
        slots[Int(s)].dirty = true
        let (file, index) = (slots[Int(s)].file, slots[Int(s)].index)
        files[file]!.dirty.insert(index)
        if files[file]!.dirtySince == nil { files[file]!.dirtySince = .now }
        dirtyPages += 1
    }

    private mutating func markClean(_ s: Int32) {
        guard slots[Int(s)].dirty else { return }
        slots[Int(s)].dirty = false
        let (file, index) = (slots[Int(s)].file, slots[Int(s)].index)
        files[file]!.dirty.remove(index)
        if files[file]!.dirty.isEmpty { files[file]!.dirtySince = nil }
        dirtyPages -= 1
        lruAppend(s)
    }

    /// Removes a page from the cache, dirty or not; its slot (and storage) is reused.
    private mutating func drop(_ s: Int32) {
        markClean(s)
        lruRemove(s)
        let (file, index) = (slots[Int(s)].file, slots[Int(s)].index)
        files[file]!.pages.removeValue(forKey: index)
        freeSlots.append(s)
        cachedPages -= 1
    }

    /// Forgets a file's state once nothing in it is worth keeping.
    private mutating func removeIfIdle(_ file: UInt64) {
        if files[file]?.isIdle == true { files.removeValue(forKey: file) }
    }

    /// A new, clean page for (`file`, `index`) with uninitialized contents, making room
    /// first: the least recently used clean page is evicted; with none, dirty data is
    /// written back (oldest file first) until one is clean.
    private mutating func allocate(_ file: UInt64, _ index: Int64, backing: some CacheBackingStore) throws(Errno) -> Int32 {
        if cachedPages >= capacityPages {
            if lruHead == Self.none {
                try writeBackOldest(backing: backing, batch: maxWriteBackPages) { $0.lruHead != Self.none }
            }
            let victim = lruHead
            let owner = slots[Int(victim)].file
            drop(victim)
            if owner != file { removeIfIdle(owner) }
        }
        let s: Int32
        if let free = freeSlots.popLast() {
            s = free
            slots[Int(s)] = Slot(file: file, index: index, storage: slots[Int(s)].storage, dirty: false, prev: Self.none, next: Self.none)
        } else {
            s = Int32(slots.count)
            let storage = try storage(forNewSlot: s)
            slots.append(Slot(file: file, index: index, storage: storage, dirty: false, prev: Self.none, next: Self.none))
        }
        files[file, default: FileState()].pages[index] = s
        cachedPages += 1
        lruAppend(s)
        return s
    }

    // MARK: Sizes

    /// The backing file's size, remembered while the file has state.
    private mutating func backingSize(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) -> Int64 {
        if let known = files[file]?.backingSize { return known }
        let size = try backing.size(file)
        if files[file] != nil { files[file]!.backingSize = size }
        return size
    }

    mutating func size(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) -> Int64 {
        max(try backingSize(file, backing: backing), files[file]?.extent ?? 0)
    }

    // MARK: Read and write

    /// Reads until `buffer` is full or the backing file ends; zero-fills the rest of `buffer`.
    private static func readFully(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                                  backing: some CacheBackingStore) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try backing.read(file, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + Int64(done))
            if n <= 0 { break }
            done += n
        }
        if done < buffer.count {
            (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
        }
    }

    mutating func read(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                       backing: some CacheBackingStore) throws(Errno) -> Int {
        guard buffer.count > 0 else { return 0 }
        let backingSize = try backingSize(file, backing: backing)
        let logical = max(backingSize, files[file]?.extent ?? 0)
        guard offset < logical else { return 0 }
        let end = min(offset + Int64(buffer.count), logical)
        let p = Self.p
        var position = offset
        while position < end {
            let index = position / p
            let chunkEnd = min((index + 1) * p, end)
            let destination = buffer.baseAddress! + Int(position - offset)
            if let s = slot(file, index) {
                destination.copyMemory(from: slots[Int(s)].storage! + Int(position - index * p), byteCount: Int(chunkEnd - position))
                statistics.hits += 1
                touch(s)
                position = chunkEnd
                continue
            }
            // A run of pages that are not cached: straight from the backing file, not cached
            // (the kernel's page cache already keeps what applications re-read).
            var runEnd = chunkEnd
            while runEnd < end, slot(file, runEnd / p) == nil {
                runEnd = min(runEnd + p, end)
                statistics.misses += 1
            }
            statistics.misses += 1
            let fromBacking = Int(max(0, min(runEnd, backingSize) - position))
            try Self.readFully(file, into: UnsafeMutableRawBufferPointer(start: destination, count: fromBacking), at: position, backing: backing)
            let zeros = Int(runEnd - position) - fromBacking
            if zeros > 0 { (destination + fromBacking).initializeMemory(as: UInt8.self, repeating: 0, count: zeros) }
            position = runEnd
        }
        return Int(end - offset)
    }

    /// The cached page for a write into page `index`; a page not cached is loaded from the
    /// backing file unless the write covers it whole (or it lies past the backing file's end).
    private mutating func pageForWrite(_ file: UInt64, _ index: Int64, whole: Bool,
                                       backing: some CacheBackingStore) throws(Errno) -> Int32 {
        if let s = slot(file, index) {
            if !whole { statistics.hits += 1 }
            touch(s)
            return s
        }
        var fromBacking = 0
        if !whole {
            statistics.misses += 1
            let size = try backingSize(file, backing: backing)
            fromBacking = Int(max(0, min(Self.p, size - index * Self.p)))
        }
        let s = try allocate(file, index, backing: backing)
        if !whole {
            let page = UnsafeMutableRawBufferPointer(start: slots[Int(s)].storage!, count: Self.pageSize)
            do throws(Errno) {
                try Self.readFully(file, into: UnsafeMutableRawBufferPointer(rebasing: page[..<fromBacking]), at: index * Self.p, backing: backing)
            } catch {
                drop(s)
                removeIfIdle(file)
                throw error
            }
            page.baseAddress!.advanced(by: fromBacking).initializeMemory(as: UInt8.self, repeating: 0, count: Self.pageSize - fromBacking)
        }
        return s
    }

    /// Buffers `data` at `offset`. Returns the bytes taken, fewer than `data.count` only
    /// when room for the rest could not be made (the write-back error is thrown instead if
    /// nothing was taken). `holding`: a writer over the dirty limit whose write-back fails
    /// is still taken while there is room (see ``PageCache/write(_:_:at:backing:holding:)``).
    mutating func write(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64,
                        backing: some CacheBackingStore, holding: Bool = false) throws(Errno) -> Int {
        guard data.count > 0 else { return 0 }
        // Back-pressure: a writer finding the dirty limit exceeded (write-back failed
        // earlier) must get it under the limit first, or fail — unless it is held.
        if dirtyPages > dirtyLimitPages {
            if holding {
                try? writeBackUnderLimit(backing: backing)
            } else {
                try writeBackUnderLimit(backing: backing)
            }
        }
        let p = Self.p
        let end = offset + Int64(data.count)
        var position = offset
        while position < end {
            let index = position / p
            let pageStart = index * p
            let chunkEnd = min(pageStart + p, end)
            let s: Int32
            do throws(Errno) {
                s = try pageForWrite(file, index, whole: position == pageStart && chunkEnd == pageStart + p, backing: backing)
            } catch {
                if position == offset { throw error }
                break
            }
            (slots[Int(s)].storage! + Int(position - pageStart))
                .copyMemory(from: data.baseAddress! + Int(position - offset), byteCount: Int(chunkEnd - position))
            markDirty(s)
            files[file]!.extent = max(files[file]!.extent, chunkEnd)
            position = chunkEnd
        }
        // Over the limit now: write back until under it. A failure is remembered by the
        // file that failed and reported by its fsync/close; this write's data is in the cache.
        if dirtyPages > dirtyLimitPages {
            try? writeBackUnderLimit(backing: backing)
        }
        return Int(position - offset)
    }

    // MARK: Truncate

    /// Truncates the backing file at once, then drops the pages past the new end and
    /// zeroes the tail of a partial last page.
    mutating func truncate(_ file: UInt64, to size: Int64, backing: some CacheBackingStore) throws(Errno) {
        try backing.truncate(file, to: size)
        guard files[file] != nil else { return }
        files[file]!.backingSize = size
        files[file]!.extent = min(files[file]!.extent, size)
        let firstGone = (size + Self.p - 1) / Self.p
        for (index, s) in files[file]!.pages where index >= firstGone {
            drop(s)
        }
        let tail = Int(size % Self.p)
        if tail != 0, let s = slot(file, size / Self.p) {
            (slots[Int(s)].storage! + tail).initializeMemory(as: UInt8.self, repeating: 0, count: Self.pageSize - tail)
        }
        removeIfIdle(file)
    }

    // MARK: Write-back

    /// Writes the dirty pages of `file` (all, or the first `budget` or so in file order),
    /// contiguous ones gathered into writes of up to `maxWriteBackPages`. On error the
    /// pages not written stay dirty and the error is remembered for the file.
    mutating func writeBack(_ file: UInt64, backing: some CacheBackingStore, budget: Int = .max) throws(Errno) {
        guard let dirty = files[file]?.dirty, !dirty.isEmpty else { return }
        var indices = dirty.sorted()
        if indices.count > budget { indices.removeLast(indices.count - budget) }
        let p = Self.p
        do throws(Errno) {
            let logical = try size(file, backing: backing)
            var i = 0
            while i < indices.count {
                var j = i + 1
                while j < indices.count, indices[j] == indices[j - 1] + 1, j - i < maxWriteBackPages { j += 1 }
                let start = indices[i] * p
                let end = min((indices[j - 1] + 1) * p, logical)
                let length = Int(max(0, end - start))
                // The pages themselves, the last cut at the logical end.
                var segments: [UnsafeRawBufferPointer] = []
                segments.reserveCapacity(j - i)
                var left = length
                for k in i..<j where left > 0 {
                    let count = min(Self.pageSize, left)
                    segments.append(UnsafeRawBufferPointer(start: slots[Int(slot(file, indices[k])!)].storage!, count: count))
                    left -= count
                }
                var written = 0
                while written < length {
                    let n = try backing.write(file, Self.remaining(of: segments, after: written), at: start + Int64(written))
                    // A regular file never answers 0 to a write of some bytes; do not spin.
                    if n <= 0 { throw Errno.ioError }
                    written += n
                }
                statistics.writeBacks += 1
                statistics.writeBackBytes += length
                if let known = files[file]!.backingSize { files[file]!.backingSize = max(known, end) }
                for k in i..<j { markClean(slot(file, indices[k])!) }
                i = j
            }
            // Everything that ever failed to be written is written now: nothing was lost,
            // so an earlier failure no longer stands between fsync and success.
            if files[file]!.dirty.isEmpty { files[file]!.error = nil }
        } catch {
            statistics.writeBackErrors += 1
            files[file]!.error = error
            // A partial write may have changed the backing size.
            files[file]!.backingSize = nil
            throw error
        }
    }

    /// Write-back for a caller that reports its error (fsync, close): the error thrown is
    /// then reported, so it is not remembered for the next one.
    mutating func writeBackReportingOnce(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) {
        do throws(Errno) {
            try writeBack(file, backing: backing)
        } catch {
            _ = takeError(file)
            throw error
        }
    }

    /// What is left of `segments` once their first `skip` bytes are written.
    private static func remaining(of segments: [UnsafeRawBufferPointer], after skip: Int) -> [UnsafeRawBufferPointer] {
        guard skip > 0 else { return segments }
        var skip = skip
        var rest: [UnsafeRawBufferPointer] = []
        for segment in segments {
            if skip >= segment.count {
                skip -= segment.count
                continue
            }
            rest.append(UnsafeRawBufferPointer(rebasing: segment[skip...]))
            skip = 0
        }
        return rest
    }

    /// Writes back dirty pages, oldest dirty file first, `batch` pages at a time (the
    /// lowest in the file first), until `done` holds, so a writer pays for what it needs
    /// and not for whole files. Throws the first error if every file was tried and `done`
    /// still does not hold.
    private mutating func writeBackOldest(backing: some CacheBackingStore, batch: Int,
                                          until done: (borrowing PageTable) -> Bool) throws(Errno) {
        var firstError: Errno?
        for file in dirtyFiles(olderThan: nil) {
            while isDirty(file) {
                do throws(Errno) { try writeBack(file, backing: backing, budget: batch) } catch {
                    firstError = firstError ?? error
                    break
                }
                if done(self) { return }
            }
        }
        if !done(self) { throw firstError ?? Errno.ioError }
    }

    /// Pages a writer over the dirty limit writes back at once (hysteresis: not one
    /// write-back per write).
    private var backPressureBatch: Int { max(1, min(dirtyLimitPages / 8, 4 * maxWriteBackPages)) }

    /// Back-pressure: under the limit by a batch.
    private mutating func writeBackUnderLimit(backing: some CacheBackingStore) throws(Errno) {
        let target = max(0, dirtyLimitPages - backPressureBatch)
        try writeBackOldest(backing: backing, batch: backPressureBatch) { $0.dirtyPages <= target }
    }

    /// Files with dirty pages (dirty since `olderThan` or earlier), oldest first.
    func dirtyFiles(olderThan limit: ContinuousClock.Instant?) -> [UInt64] {
        files.compactMap { (file, state) -> (UInt64, ContinuousClock.Instant)? in
            guard let since = state.dirtySince, limit.map({ since <= $0 }) ?? true else { return nil }
            return (file, since)
        }
        .sorted { $0.1 < $1.1 }
        .map(\.0)
    }

    /// Writes back every file; returns the ones that failed and why.
    mutating func writeBackAll(backing: some CacheBackingStore) -> [UInt64: Errno] {
        var failed: [UInt64: Errno] = [:]
        for file in dirtyFiles(olderThan: nil) {
            do throws(Errno) { try writeBack(file, backing: backing) } catch { failed[file] = error }
        }
        return failed
    }

    // MARK: Errors and forgetting

    mutating func takeError(_ file: UInt64) -> Errno? {
        guard let error = files[file]?.error else { return nil }
        files[file]!.error = nil
        removeIfIdle(file)
        return error
    }

    /// Drops everything cached for `file`, dirty or not.
    mutating func discard(_ file: UInt64) {
        guard let pages = files[file]?.pages else { return }
        for s in pages.values { drop(s) }
        files.removeValue(forKey: file)
    }

    /// Writes back `file` and drops its clean pages and its remembered backing size, for
    /// changes made to the backing file behind the cache's back.
    mutating func invalidate(_ file: UInt64, backing: some CacheBackingStore) throws(Errno) {
        try writeBack(file, backing: backing)
        guard let pages = files[file]?.pages else { return }
        for s in pages.values { drop(s) }
        files[file]!.backingSize = nil
        files[file]!.extent = 0
        removeIfIdle(file)
    }

    func holds(_ file: UInt64) -> Bool { files[file] != nil }

    /// Before a write-through of whole pages: the cached pages it replaces go, dirty or not.
    mutating func dropPages(_ file: UInt64, covering offset: Int64, count: Int) {
        dropPages(file, from: offset / Self.p, to: (offset + Int64(count)) / Self.p)
    }

    /// Drops every page the range touches, partial ones included (they must be clean).
    mutating func dropPages(_ file: UInt64, touching offset: Int64, count: Int) {
        dropPages(file, from: offset / Self.p, to: (offset + Int64(count) + Self.p - 1) / Self.p)
    }

    /// Drops the pages with index in `first..<end`.
    private mutating func dropPages(_ file: UInt64, from first: Int64, to end: Int64) {
        guard let pages = files[file]?.pages, !pages.isEmpty, first < end else { return }
        if Int64(pages.count) < end - first {
            for (index, s) in pages where index >= first && index < end { drop(s) }
        } else {
            for index in first..<end { if let s = pages[index] { drop(s) } }
        }
        removeIfIdle(file)
    }

    /// After a write-through that ended at `end` (nil: unknown, after an error).
    mutating func wroteThrough(_ file: UInt64, end: Int64?, bytes: Int) {
        if bytes > 0 {
            statistics.writeThroughs += 1
            statistics.writeThroughBytes += bytes
        }
        guard files[file] != nil else { return }
        if let end, let known = files[file]!.backingSize {
            files[file]!.backingSize = max(known, end)
        } else {
            files[file]!.backingSize = nil
        }
    }

    func isDirty(_ file: UInt64) -> Bool { files[file]?.dirty.isEmpty == false }

    var dirtyBytes: Int { dirtyPages * Self.pageSize }
    var cachedBytes: Int { cachedPages * Self.pageSize }
}
