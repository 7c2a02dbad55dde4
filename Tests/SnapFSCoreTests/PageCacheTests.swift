import Dispatch
import Glibc
@testable import SnapFSCache
@testable import SnapFSCore
import Synchronization
import SystemPackage
import Testing

/// An in-memory backing store that counts calls and injects failures.
final class FakeBackingStore: CacheBackingStore {
    struct State {
        var files: [UInt64: [UInt8]] = [:]
        var writes = 0
        var writeSizes: [Int] = []
        var reads = 0
        var syncs = 0
        var truncates = 0
        /// The n-th write (1-based, counting all writes) fails with ENOSPC.
        var failWrite: Int?
        /// Every write fails with this error (a full disk) while set.
        var writeError: Errno?
        /// Writes take at most this many bytes.
        var shortWrite: Int?
        /// The next sync fails with this error.
        var syncError: Errno?
    }

    let state = Mutex(State())

    func content(_ file: UInt64) -> [UInt8] { state.withLock { $0.files[file] ?? [] } }
    func set(_ file: UInt64, _ bytes: [UInt8]) { state.withLock { $0.files[file] = bytes } }
    func update(_ body: (inout State) -> Void) { state.withLock { body(&$0) } }
    var writes: Int { state.withLock { $0.writes } }

    func read(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        state.withLock { state in
            state.reads += 1
            let bytes = state.files[file] ?? []
            guard offset < bytes.count else { return 0 }
            let n = min(buffer.count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + Int(offset), byteCount: n) }
            return n
        }
    }

    func write(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try state.withLock { (state) throws(Errno) -> Int in
            state.writes += 1
            if state.writes == state.failWrite { throw Errno.noSpace }
            if let error = state.writeError { throw error }
            let n = min(data.count, state.shortWrite ?? data.count)
            state.writeSizes.append(n)
            var bytes = state.files[file] ?? []
            let end = Int(offset) + n
            if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
            bytes.withUnsafeMutableBytes { ($0.baseAddress! + Int(offset)).copyMemory(from: data.baseAddress!, byteCount: n) }
            state.files[file] = bytes
            return n
        }
    }

    /// A vectored write is one write (like pwritev), of the segments gathered.
    func write(_ file: UInt64, _ segments: [UnsafeRawBufferPointer], at offset: Int64) throws(Errno) -> Int {
        let gathered = segments.flatMap { Array($0) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, gathered.count), alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: gathered)
        return try write(file, UnsafeRawBufferPointer(rebasing: buffer[0..<gathered.count]), at: offset)
    }

    func sync(_ file: UInt64, dataOnly: Bool) throws(Errno) {
        try state.withLock { (state) throws(Errno) in
            state.syncs += 1
            if let error = state.syncError {
                state.syncError = nil
                throw error
            }
        }
    }

    func size(_ file: UInt64) throws(Errno) -> Int64 {
        state.withLock { Int64($0.files[file]?.count ?? 0) }
    }

    func truncate(_ file: UInt64, to size: Int64) throws(Errno) {
        state.withLock { state in
            state.truncates += 1
            var bytes = state.files[file] ?? []
            if bytes.count > size { bytes.removeLast(bytes.count - Int(size)) }
            else { bytes += [UInt8](repeating: 0, count: Int(size) - bytes.count) }
            state.files[file] = bytes
        }
    }
}

/// A file's expected content, changed exactly as the cache is asked to change it.
struct FileModel {
    var bytes: [UInt8] = []

    mutating func write(_ data: [UInt8], at offset: Int) {
        if bytes.count < offset + data.count { bytes += [UInt8](repeating: 0, count: offset + data.count - bytes.count) }
        bytes.replaceSubrange(offset..<offset + data.count, with: data)
    }

    mutating func truncate(_ size: Int) {
        if bytes.count > size { bytes.removeLast(bytes.count - size) }
        else { bytes += [UInt8](repeating: 0, count: size - bytes.count) }
    }
}

/// SplitMix64: small, seedable, good enough for test data.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let pageSize = PageCache.pageSize

extension PageCache {
    @discardableResult
    func write(_ file: UInt64, _ bytes: [UInt8], at offset: Int, backing: FakeBackingStore, holding: Bool = false) throws -> Int {
        try bytes.withUnsafeBytes { data in try write(file, data, at: Int64(offset), backing: backing, holding: holding) }
    }

    @discardableResult
    func writeThroughUnlessDirty(_ file: UInt64, _ bytes: [UInt8], at offset: Int, backing: FakeBackingStore) throws -> Int {
        try bytes.withUnsafeBytes { data in try writeThroughUnlessDirty(file, data, at: Int64(offset), backing: backing) }
    }

    func read(_ file: UInt64, count: Int, at offset: Int, backing: FakeBackingStore) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0xEE, count: count)
        let n = try buffer.withUnsafeMutableBytes { buffer in
            try read(file, into: buffer, at: Int64(offset), backing: backing)
        }
        return Array(buffer[0..<n])
    }

    /// The whole file as the cache presents it.
    func content(_ file: UInt64, backing: FakeBackingStore) throws -> [UInt8] {
        try read(file, count: Int(try size(file, backing: backing)) + 10, at: 0, backing: backing)
    }
}

func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ 1) | 1 }
}

@Suite struct PageCacheTests {
    @Test func readsSeeWritesAcrossPageBoundariesAtUnalignedOffsets() throws {
        let backing = FakeBackingStore()
        var model = FileModel(bytes: pattern(10_000, seed: 1))
        backing.set(1, model.bytes)
        let cache = PageCache(.init(capacity: 64 * pageSize, dirtyLimit: 64 * pageSize))
        for (offset, count) in [(100, 5000), (4095, 2), (8191, 4098), (3, 1), (12_000, 300)] {
            let data = pattern(count, seed: UInt8(offset & 0xFF))
            #expect(try cache.write(1, data, at: offset, backing: backing) == count)
            model.write(data, at: offset)
        }
        #expect(try cache.size(1, backing: backing) == Int64(model.bytes.count))
        #expect(try cache.content(1, backing: backing) == model.bytes)
        for (offset, count) in [(0, 1), (4090, 20), (8000, 5000), (12_250, 100), (99, 4097)] {
            #expect(try cache.read(1, count: count, at: offset, backing: backing) == Array(model.bytes[offset..<min(offset + count, model.bytes.count)]))
        }
        // Nothing reached the backing file yet; after write-back it holds the model.
        #expect(backing.writes == 0)
        #expect(backing.content(1) == pattern(10_000, seed: 1))
        try cache.writeBack(1, backing: backing)
        #expect(backing.content(1) == model.bytes)
        #expect(cache.statistics.dirtyBytes == 0)
    }

    @Test func holesAndTheRegionPastTheBackingEndReadAsZeros() throws {
        let backing = FakeBackingStore()
        backing.set(7, pattern(100, seed: 2))
        let cache = PageCache(.init(capacity: 16 * pageSize))
        try cache.write(7, [1, 2, 3], at: 5 * pageSize + 10, backing: backing)
        let content = try cache.content(7, backing: backing)
        #expect(content.count == 5 * pageSize + 13)
        #expect(Array(content[0..<100]) == pattern(100, seed: 2))
        #expect(content[100..<(5 * pageSize + 10)].allSatisfy { $0 == 0 })
        #expect(Array(content.suffix(3)) == [1, 2, 3])
        // Reads stop at the logical end.
        #expect(try cache.read(7, count: 100, at: 5 * pageSize + 12, backing: backing) == [3])
        #expect(try cache.read(7, count: 100, at: 6 * pageSize, backing: backing) == [])
        #expect(backing.content(7).count == 100)
        try cache.writeBack(7, backing: backing)
        #expect(backing.content(7) == content)
        // Only the dirty page was written, not the hole.
        #expect(backing.state.withLock { $0.writeSizes } == [13])
    }

    @Test(arguments: [(300, 64 << 10), (1000, 1 << 20), (7, 3 * 4096), (1, 1 << 20)])
    func contiguousDirtyPagesAreCoalesced(pages: Int, maxWriteBack: Int) throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: (pages + 1) * pageSize, dirtyLimit: (pages + 1) * pageSize, maxWriteBack: maxWriteBack))
        var model = FileModel()
        for page in 0..<pages {
            let data = pattern(pageSize, seed: UInt8(page & 0xFF))
            try cache.write(3, data, at: page * pageSize, backing: backing)
            model.write(data, at: page * pageSize)
        }
        #expect(backing.writes == 0)
        try cache.writeBack(3, backing: backing)
        let expected = (pages * pageSize + maxWriteBack - 1) / maxWriteBack
        #expect(backing.writes == expected)
        #expect(cache.statistics.writeBacks == expected)
        #expect(cache.statistics.writeBackBytes == pages * pageSize)
        #expect(backing.content(3) == model.bytes)
    }

    @Test func separateRunsAreSeparateWrites() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 64 * pageSize))
        for page in [0, 1, 2, 5, 6, 9] { try cache.write(2, [UInt8(page)], at: page * pageSize, backing: backing) }
        try cache.writeBack(2, backing: backing)
        #expect(backing.writes == 3)
    }

    @Test func truncateDownAndUpWithDirtyPagesAndAPartialLastPage() throws {
        let backing = FakeBackingStore()
        var model = FileModel(bytes: pattern(3 * pageSize, seed: 3))
        backing.set(4, model.bytes)
        let cache = PageCache(.init(capacity: 32 * pageSize))
        let data = pattern(3 * pageSize - 200, seed: 4)
        try cache.write(4, data, at: 100, backing: backing)
        model.write(data, at: 100)
        // Down into the middle of page 1: page 2 goes, page 1's tail is zeroed.
        try cache.truncate(4, to: Int64(pageSize + 500), backing: backing)
        model.truncate(pageSize + 500)
        #expect(try cache.content(4, backing: backing) == model.bytes)
        #expect(cache.statistics.cachedBytes == 2 * pageSize)
        // Up again: zeros past the old end, including inside the partial page.
        try cache.truncate(4, to: Int64(2 * pageSize + 7), backing: backing)
        model.truncate(2 * pageSize + 7)
        #expect(try cache.content(4, backing: backing) == model.bytes)
        // Down, then a write past the old end: zeros in between.
        try cache.truncate(4, to: 50, backing: backing)
        model.truncate(50)
        try cache.write(4, [9, 9], at: 5 * pageSize, backing: backing)
        model.write([9, 9], at: 5 * pageSize)
        #expect(try cache.content(4, backing: backing) == model.bytes)
        try cache.writeBack(4, backing: backing)
        #expect(backing.content(4) == model.bytes)
        #expect(try cache.size(4, backing: backing) == Int64(model.bytes.count))
    }

    @Test func truncateDropsDirtyPagesPastTheEnd() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 32 * pageSize))
        try cache.write(5, pattern(8 * pageSize, seed: 5), at: 0, backing: backing)
        try cache.truncate(5, to: 10, backing: backing)
        #expect(cache.statistics.dirtyBytes == pageSize)
        try cache.writeBack(5, backing: backing)
        #expect(backing.content(5) == Array(pattern(10, seed: 5)))
        #expect(backing.state.withLock { $0.writeSizes } == [10])
    }

    @Test func backPressureBoundsDirtyBytes() throws {
        let backing = FakeBackingStore()
        let limit = 16 * pageSize
        let cache = PageCache(.init(capacity: 64 * pageSize, dirtyLimit: limit))
        var models = [FileModel(), FileModel(), FileModel()]
        var random = SeededGenerator(seed: 42)
        for _ in 0..<2000 {
            let file = Int.random(in: 0..<3, using: &random)
            let count = Int.random(in: 1...(3 * pageSize), using: &random)
            let offset = Int.random(in: 0..<(100 * pageSize), using: &random)
            let data = pattern(count, seed: UInt8.random(in: 0...255, using: &random))
            try cache.write(UInt64(file), data, at: offset, backing: backing)
            models[file].write(data, at: offset)
            // The writer itself wrote back down to the limit.
            #expect(cache.statistics.dirtyBytes <= limit)
            #expect(cache.statistics.cachedBytes <= 64 * pageSize)
        }
        #expect(cache.statistics.writeBacks > 0)
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        for file in 0..<3 { #expect(backing.content(UInt64(file)) == models[file].bytes) }
    }

    @Test func evictionKeepsCachedBytesUnderCapacityAndNeverLosesDirtyData() throws {
        let backing = FakeBackingStore()
        let capacity = 8 * pageSize
        // A dirty limit as large as the cache: room is made by eviction's write-back.
        let cache = PageCache(.init(capacity: capacity, dirtyLimit: capacity))
        var models = [FileModel(), FileModel(), FileModel()]
        for round in 0..<100 {
            let file = round % 3
            let data = pattern(pageSize + 17, seed: UInt8(round))
            let offset = (round * 5 % 40) * pageSize + round
            try cache.write(UInt64(file), data, at: offset, backing: backing)
            models[file].write(data, at: offset)
            #expect(cache.statistics.cachedBytes <= capacity)
            let check = (round + 1) % 3
            #expect(try cache.content(UInt64(check), backing: backing) == models[check].bytes)
        }
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        for file in 0..<3 { #expect(backing.content(UInt64(file)) == models[file].bytes) }
    }

    @Test func noSpaceLeavesDataDirtyReportsOnceAndARetryWritesEverything() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 64 * pageSize, dirtyLimit: 64 * pageSize, maxWriteBack: 4 * pageSize))
        var model = FileModel()
        let data = pattern(20 * pageSize + 99, seed: 6)
        try cache.write(8, data, at: 0, backing: backing)
        model.write(data, at: 0)
        // The second backing write fails: the first chunk is written, the rest stays dirty.
        backing.update { $0.failWrite = 2 }
        #expect(throws: Errno.noSpace) { try cache.writeBack(8, backing: backing) }
        #expect(cache.statistics.dirtyBytes == 17 * pageSize)
        #expect(cache.statistics.writeBackErrors == 1)
        // The disk is full now.
        backing.update { $0.writeError = .noSpace }
        #expect(try cache.content(8, backing: backing) == model.bytes)
        #expect(throws: Errno.noSpace) { try cache.fsync(8, dataOnly: false, backing: backing) }
        #expect(cache.statistics.dirtyBytes == 17 * pageSize)
        // A background write-back fails; the error waits for the next fsync.
        #expect(cache.writeBackAll(backing: backing) == [8: .noSpace])
        // Space is freed: fsync writes everything, so nothing was lost and it succeeds.
        backing.update { $0.writeError = nil }
        try cache.fsync(8, dataOnly: false, backing: backing)
        #expect(cache.statistics.dirtyBytes == 0)
        #expect(backing.content(8) == model.bytes)
        try cache.fsync(8, dataOnly: false, backing: backing)
        #expect(cache.takeError(8) == nil)
    }

    @Test func closeTakesTheRememberedErrorOnce() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 8 * pageSize))
        try cache.write(1, [1], at: 0, backing: backing)
        backing.update { $0.writeError = .diskQuotaExceeded }
        #expect(throws: Errno.diskQuotaExceeded) { try cache.writeBack(1, backing: backing) }
        #expect(cache.takeError(1) == .diskQuotaExceeded)
        #expect(cache.takeError(1) == nil)
        #expect(cache.statistics.dirtyBytes == pageSize)
    }

    @Test func writersFailWhenTheDirtyLimitCannotBeMet() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 16 * pageSize, dirtyLimit: 4 * pageSize))
        backing.update { $0.writeError = .noSpace }
        var model = FileModel()
        // Accepted past the limit (the failure is remembered), then refused.
        let first = pattern(6 * pageSize, seed: 7)
        #expect(try cache.write(1, first, at: 0, backing: backing) == first.count)
        model.write(first, at: 0)
        #expect(throws: Errno.noSpace) { try cache.write(2, [1], at: 0, backing: backing) }
        // Never more than the limit plus one write's pages.
        #expect(cache.statistics.dirtyBytes == 6 * pageSize)
        #expect(cache.takeError(1) == .noSpace)
        backing.update { $0.writeError = nil }
        try cache.write(2, [1], at: 0, backing: backing)
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        #expect(backing.content(1) == model.bytes)
        #expect(backing.content(2) == [1])
    }

    @Test func refusedWritesAreHeldWhileThereIsRoomAndWrittenOnceSpaceReturns() throws {
        // The kernel's write-back: what reaches the cache was acknowledged long ago, so a
        // full disk must not make the cache refuse it while it has room.
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 32 * pageSize, dirtyLimit: 4 * pageSize))
        backing.update { $0.writeError = .noSpace }
        var model = FileModel()
        // Small writes past the dirty limit, and a large page-aligned one that would go through.
        // One page per write, as the kernel's write-back of a page; each is taken whole.
        func writeByPage(_ file: UInt64, _ bytes: [UInt8]) throws {
            for at in stride(from: 0, to: bytes.count, by: pageSize) {
                let page = Array(bytes[at..<at + pageSize])
                #expect(try cache.write(file, page, at: at, backing: backing, holding: true) == pageSize)
            }
        }
        let small = pattern(10 * pageSize, seed: 21)
        try writeByPage(1, small)
        model.write(small, at: 0)
        let large = pattern(16 * pageSize, seed: 22)
        #expect(large.count >= PageCache.writeThroughMinimum)
        #expect(try cache.write(1, large, at: 10 * pageSize, backing: backing, holding: true) == large.count)
        model.write(large, at: 10 * pageSize)
        #expect(cache.statistics.dirtyBytes == 26 * pageSize)
        #expect(try cache.content(1, backing: backing) == model.bytes)
        // fsync reports the full disk; nothing is dropped.
        #expect(throws: Errno.noSpace) { try cache.fsync(1, dataOnly: true, backing: backing) }
        // Room runs out: then, and only then, a write is refused.
        let more = pattern(7 * pageSize, seed: 23)
        #expect(throws: Errno.noSpace) { try writeByPage(2, more) }
        #expect(cache.statistics.cachedBytes <= 32 * pageSize)
        // Space is back: everything held reaches the file.
        backing.update { $0.writeError = nil }
        try cache.fsync(1, dataOnly: true, backing: backing)
        #expect(backing.content(1) == Array(small + large))
    }

    @Test func shortWritesAreRetried() throws {
        let backing = FakeBackingStore()
        backing.update { $0.shortWrite = 1000 }
        let cache = PageCache(.init(capacity: 16 * pageSize))
        let data = pattern(5 * pageSize + 3, seed: 8)
        try cache.write(1, data, at: 7, backing: backing)
        try cache.fsync(1, dataOnly: true, backing: backing)
        #expect(backing.content(1) == [UInt8](repeating: 0, count: 7) + data)
        #expect(backing.writes == (5 * pageSize + 10 + 999) / 1000)
        #expect(cache.statistics.writeBacks == 1)
    }

    @Test func syncErrorIsReported() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 16 * pageSize))
        try cache.write(1, [1, 2, 3], at: 0, backing: backing)
        backing.update { $0.syncError = .ioError }
        #expect(throws: Errno.ioError) { try cache.fsync(1, dataOnly: false, backing: backing) }
        #expect(backing.content(1) == [1, 2, 3])
        try cache.fsync(1, dataOnly: false, backing: backing)
        #expect(backing.state.withLock { $0.syncs } == 2)
    }

    @Test func discardDropsEverything() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 16 * pageSize))
        try cache.write(1, pattern(3 * pageSize, seed: 9), at: 0, backing: backing)
        cache.discard(1)
        #expect(cache.statistics.cachedBytes == 0)
        #expect(cache.statistics.dirtyBytes == 0)
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        #expect(backing.writes == 0)
        #expect(try cache.size(1, backing: backing) == 0)
    }

    @Test func dirtyFilesOldestFirst() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 16 * pageSize))
        let before = ContinuousClock.now
        try cache.write(2, [1], at: 0, backing: backing)
        try cache.write(1, [1], at: 0, backing: backing)
        let middle = ContinuousClock.now
        try cache.write(3, [1], at: 0, backing: backing)
        #expect(cache.dirtyFiles(olderThan: before) == [])
        #expect(cache.dirtyFiles(olderThan: middle) == [2, 1])
        #expect(cache.dirtyFiles(olderThan: .now) == [2, 1, 3])
        try cache.writeBack(2, backing: backing)
        #expect(cache.dirtyFiles(olderThan: .now) == [1, 3])
    }

    @Test func readsCountHitsAndMisses() throws {
        let backing = FakeBackingStore()
        backing.set(1, pattern(4 * pageSize, seed: 10))
        let cache = PageCache(.init(capacity: 16 * pageSize))
        try cache.write(1, [1], at: pageSize, backing: backing)
        _ = try cache.read(1, count: 4 * pageSize, at: 0, backing: backing)
        let statistics = cache.statistics
        // The partial write loaded page 1 (a miss); the read found it (a hit), not the others.
        #expect(statistics.hits == 1)
        #expect(statistics.misses == 4)
    }

    @Test func aWriteLargerThanTheCacheGoesThrough() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 4 * pageSize, dirtyLimit: 2 * pageSize))
        let data = pattern(20 * pageSize + 5, seed: 11)
        #expect(try cache.write(1, data, at: 3, backing: backing) == data.count)
        #expect(cache.statistics.cachedBytes <= 4 * pageSize)
        #expect(try cache.content(1, backing: backing) == [0, 0, 0] + data)
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        #expect(backing.content(1) == [0, 0, 0] + data)
    }

    @Test func largeWholePageWritesGoThroughAndReplaceCachedPages() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 64 * pageSize))
        var model = FileModel()
        // Dirty pages 0…20 (partial first and last), then a 16-page write-through over 4…19.
        let small = pattern(20 * pageSize + 100, seed: 3)
        try cache.write(1, small, at: 7, backing: backing)
        model.write(small, at: 7)
        let large = pattern(16 * pageSize, seed: 4)
        try cache.write(1, large, at: 4 * pageSize, backing: backing)
        model.write(large, at: 4 * pageSize)
        #expect(cache.statistics.writeThroughs == 1)
        #expect(cache.statistics.writeThroughBytes == large.count)
        // The replaced pages are gone; the others still wait, dirty.
        #expect(cache.statistics.dirtyBytes == 5 * pageSize)
        #expect(try cache.content(1, backing: backing) == model.bytes)
        // A write-through past the end grows the file; the cache knows its new size.
        let tail = pattern(32 * pageSize, seed: 5)
        try cache.write(1, tail, at: 40 * pageSize, backing: backing)
        model.write(tail, at: 40 * pageSize)
        #expect(try cache.size(1, backing: backing) == Int64(model.bytes.count))
        #expect(try cache.content(1, backing: backing) == model.bytes)
        try cache.fsync(1, dataOnly: false, backing: backing)
        #expect(backing.content(1) == model.bytes)
    }

    @Test func writeThroughUnlessDirtyGoesToTheBackingAndDropsStaleCleanPages() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 64 * pageSize))
        var model = FileModel()
        // Clean cached pages 0…2 (written, then written back), then small unaligned writes
        // through them: the backing file gets each at once, and no stale page survives.
        let first = pattern(3 * pageSize, seed: 21)
        try cache.write(1, first, at: 0, backing: backing)
        model.write(first, at: 0)
        try cache.fsync(1, dataOnly: true, backing: backing)
        let writesBefore = backing.writes
        for (offset, count) in [(100, 50), (pageSize - 10, 30), (2 * pageSize + 7, 3 * pageSize)] {
            let data = pattern(count, seed: UInt8(truncatingIfNeeded: offset))
            #expect(try cache.writeThroughUnlessDirty(1, data, at: offset, backing: backing) == count)
            model.write(data, at: offset)
            #expect(backing.content(1) == model.bytes)
        }
        #expect(backing.writes == writesBefore + 3)
        #expect(cache.statistics.dirtyBytes == 0)
        // A partial write makes a page dirty again from what is cached: it must be the new data.
        let patch = pattern(10, seed: 99)
        try cache.write(1, patch, at: 120, backing: backing)
        model.write(patch, at: 120)
        #expect(try cache.content(1, backing: backing) == model.bytes)
        // With dirty data in the cache, the write is buffered like any other.
        let buffered = pattern(20, seed: 7)
        let writes = backing.writes
        #expect(try cache.writeThroughUnlessDirty(1, buffered, at: 4000, backing: backing) == 20)
        model.write(buffered, at: 4000)
        #expect(backing.writes == writes)
        #expect(try cache.content(1, backing: backing) == model.bytes)
        try cache.fsync(1, dataOnly: false, backing: backing)
        #expect(backing.content(1) == model.bytes)
    }

    @Test func invalidateSeesChangesMadeBehindTheCache() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 8 * pageSize))
        try cache.write(1, [1, 2, 3], at: 0, backing: backing)
        try cache.invalidate(1, backing: backing)
        #expect(backing.content(1) == [1, 2, 3])
        // e.g. copy_file_range or fallocate on the backing file.
        backing.set(1, [7, 7, 7, 7, 7])
        #expect(try cache.content(1, backing: backing) == [7, 7, 7, 7, 7])
        #expect(cache.statistics.cachedBytes == 0)
    }

    @Test func concurrentWritersOfDifferentFiles() throws {
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 16 * pageSize, dirtyLimit: 8 * pageSize, maxWriteBack: 4 * pageSize))
        let threads = 8
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for round in 0..<200 {
                let data = pattern(1000 + round, seed: UInt8(thread))
                _ = try? cache.write(UInt64(thread), data, at: round * 997, backing: backing)
            }
        }
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        for thread in 0..<threads {
            var model = FileModel()
            for round in 0..<200 { model.write(pattern(1000 + round, seed: UInt8(thread)), at: round * 997) }
            #expect(backing.content(UInt64(thread)) == model.bytes)
            #expect(try cache.content(UInt64(thread), backing: backing) == model.bytes)
        }
        #expect(cache.statistics.cachedBytes <= 16 * pageSize)
    }

    /// Thousands of random operations on a tiny cache against a byte-array model.
    @Test(arguments: [false, true])
    func randomOperationsMatchTheModel(injectFailures: Bool) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        print("PageCache random test seed: \(seed) (failures: \(injectFailures))")
        var random = SeededGenerator(seed: seed)
        let backing = FakeBackingStore()
        let cache = PageCache(.init(capacity: 8 * pageSize, dirtyLimit: 5 * pageSize, maxWriteBack: 2 * pageSize))
        let files: [UInt64] = [1, 2, 3]
        var models: [UInt64: FileModel] = [:]
        for file in files {
            let initial = pattern(Int.random(in: 0...(6 * pageSize), using: &random), seed: UInt8(file))
            backing.set(file, initial)
            models[file] = FileModel(bytes: initial)
        }
        let span = 12 * pageSize
        for step in 0..<5000 {
            let file = files.randomElement(using: &random)!
            if injectFailures {
                backing.update { state in
                    state.shortWrite = Int.random(in: 0..<4, using: &random) == 0 ? Int.random(in: 1...pageSize, using: &random) : nil
                    state.writeError = Int.random(in: 0..<20, using: &random) == 0 ? .noSpace : nil
                }
            }
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<50:
                let offset = Int.random(in: 0..<span, using: &random)
                let count = Int.random(in: 1...(3 * pageSize), using: &random)
                let data = pattern(count, seed: UInt8(truncatingIfNeeded: step))
                do {
                    let taken = try cache.write(file, data, at: offset, backing: backing)
                    models[file]!.write(Array(data[0..<taken]), at: offset)
                } catch {
                    #expect(injectFailures, "step \(step): write failed: \(error)")
                }
            case 50..<60:
                let size = Int.random(in: 0..<span, using: &random)
                try cache.truncate(file, to: Int64(size), backing: backing)
                models[file]!.truncate(size)
            case 60..<90:
                let offset = Int.random(in: 0..<span, using: &random)
                let count = Int.random(in: 0...(3 * pageSize), using: &random)
                let bytes = models[file]!.bytes
                let expected = offset < bytes.count ? Array(bytes[offset..<min(offset + count, bytes.count)]) : []
                let got = try cache.read(file, count: count, at: offset, backing: backing)
                #expect(got == expected, "step \(step): read \(count) at \(offset) of file \(file)")
                if got != expected { return }
            case 90..<95:
                do { try cache.writeBack(file, backing: backing) } catch { #expect(injectFailures) }
            default:
                do { try cache.fsync(file, dataOnly: false, backing: backing) } catch { #expect(injectFailures) }
            }
            #expect(try cache.size(file, backing: backing) == Int64(models[file]!.bytes.count))
            #expect(cache.statistics.cachedBytes <= 8 * pageSize)
        }
        print("PageCache random test statistics: \(cache.statistics), backing writes: \(backing.writes)")
        backing.update { $0.writeError = nil; $0.shortWrite = nil }
        #expect(cache.writeBackAll(backing: backing).isEmpty)
        #expect(cache.statistics.dirtyBytes == 0)
        for file in files {
            #expect(backing.content(file) == models[file]!.bytes, "file \(file), seed \(seed)")
            #expect(try cache.content(file, backing: backing) == models[file]!.bytes)
        }
    }
}
