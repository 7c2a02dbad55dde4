import Glibc
@testable import SnapFSBacking
import SnapFSCore
@testable import SnapFSSQLite
import Testing

/// A file in memory that the tracker reads through, written the way SQLite writes.
final class MemoryFile: PositionalReader {
    var bytes: [UInt8] = []
    /// Reads the tracker made.
    var reads = 0

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        reads += 1
        guard offset >= 0, offset < Int64(bytes.count) else { return 0 }
        let n = min(buffer.count, bytes.count - Int(offset))
        bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + Int(offset), byteCount: n)
        }
        return n
    }

    func write(_ data: [UInt8], at offset: Int) {
        if bytes.count < offset + data.count { bytes += [UInt8](repeating: 0, count: offset + data.count - bytes.count) }
        bytes.replaceSubrange(offset..<offset + data.count, with: data)
    }
}

/// A real WAL made by SQLite (python3's sqlite3 module), kept by copying it while the
/// connection is open: `transactions` commits after the CREATE TABLE, with checkpoints off.
struct RecordedWAL {
    let wal: [UInt8]
    let database: [UInt8]
    let pageSize: Int

    /// `filler` rows of another table are written first, in rollback mode: their pages are
    /// in the database file and none of them in the log.
    static func make(transactions: Int, pageSize: Int = 4096, rowsPerTransaction: Int = 1, filler: Int = 0) -> RecordedWAL? {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let script = """
        import sqlite3, shutil
        c = sqlite3.connect('\(dir.path)/db', isolation_level=None)
        c.execute('PRAGMA page_size=\(pageSize)')
        if \(filler) > 0:
            c.execute('CREATE TABLE f(pad BLOB)')
            c.executemany('INSERT INTO f(pad) VALUES (randomblob(300))', [()] * \(filler))
        c.execute('PRAGMA journal_mode=WAL')
        c.execute('PRAGMA wal_autocheckpoint=0')
        c.execute('CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)')
        for i in range(1, \(transactions) + 1):
            c.execute('BEGIN')
            for j in range(\(rowsPerTransaction)):
                c.execute('INSERT INTO t(pad) VALUES (randomblob(300))')
            c.execute('COMMIT')
        shutil.copy('\(dir.path)/db-wal', '\(dir.path)/wal.copy')
        shutil.copy('\(dir.path)/db', '\(dir.path)/db.copy')
        """
        let scriptPath = dir.file("make.py", contents: script)
        guard system("python3 '\(scriptPath)'") == 0,
              let wal = readWholeFile(dir.path + "/wal.copy"),
              let database = readWholeFile(dir.path + "/db.copy") else { return nil }
        return RecordedWAL(wal: wal, database: database, pageSize: pageSize)
    }

    var frameSize: Int { 24 + pageSize }
    var frameCount: Int { (wal.count - 32) / frameSize }

    /// Commit frames (from 1) as SQLite's own format says: a non-zero database size.
    var commitFrames: [Int] {
        (1...frameCount).filter { frame in
            let start = 32 + (frame - 1) * frameSize + 4
            return wal[start..<start + 4].contains { $0 != 0 }
        }
    }

    /// Replays the log into `file` as SQLite writes it (header, then each frame's header
    /// and page in two writes), returning the commits the tracker reports after each write.
    func replay(into file: MemoryFile, tracker: inout WALTracker, frames: Int? = nil) -> [WALCommit] {
        var commits: [WALCommit] = []
        func write(_ range: Range<Int>) {
            let data = Array(wal[range])
            file.write(data, at: range.lowerBound)
            if let commit = data.withUnsafeBytes({ tracker.noteWrite(offset: Int64(range.lowerBound), data: $0, reader: file) }) {
                commits.append(commit)
            }
        }
        write(0..<32)
        for frame in 1...(frames ?? frameCount) {
            let start = 32 + (frame - 1) * frameSize
            write(start..<start + 24)
            write(start + 24..<start + frameSize)
        }
        return commits
    }
}

@Suite struct WALTrackerTests {
    @Test func everyCommitOfARealLogIsReportedAtItsFrame() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 25))
        var tracker = WALTracker()
        let file = MemoryFile()
        let commits = recorded.replay(into: file, tracker: &tracker)
        #expect(commits.map { Int($0.frame) } == recorded.commitFrames)
        #expect(commits.count == 26)   // CREATE TABLE and 25 inserts
        #expect(tracker.committedFrames == UInt32(recorded.frameCount))
        #expect(Int(tracker.committedDatabasePages) * recorded.pageSize >= recorded.database.count)
        let header = try #require(tracker.header)
        #expect(header.pageSize == 4096)
    }

    @Test func writtenAsSQLiteWritesItTheLogIsNotReadBack() throws {
        // Transactions of several frames: each frame verifies from its two writes.
        let recorded = try #require(RecordedWAL.make(transactions: 12, rowsPerTransaction: 40))
        var tracker = WALTracker()
        let file = MemoryFile()
        let commits = recorded.replay(into: file, tracker: &tracker)
        #expect(commits.map { Int($0.frame) } == recorded.commitFrames)
        #expect(recorded.frameCount > commits.count)
        #expect(file.reads == 0)
        // A frame whose header was written two writes back is read from the file.
        let before = tracker.committedFrames
        let start = 32 + Int(before) * recorded.frameSize
        var frame = Array(recorded.wal[(32 + (recorded.commitFrames.last! - 1) * recorded.frameSize)...].prefix(recorded.frameSize))
        frame.replaceSubrange(8..<16, with: recorded.wal[16..<24])   // this log's salts; the checksum is then wrong
        file.write(Array(frame[0..<24]), at: start)
        _ = frame[0..<24].withUnsafeBytes { tracker.noteWrite(offset: Int64(start), data: $0, reader: file) }
        file.write([0], at: start + recorded.frameSize + 100)
        _ = [UInt8(0)].withUnsafeBytes { tracker.noteWrite(offset: Int64(start + recorded.frameSize + 100), data: $0, reader: file) }
        file.write(Array(frame[24...]), at: start + 24)
        let late = frame[24...].withUnsafeBytes { tracker.noteWrite(offset: Int64(start + 24), data: $0, reader: file) }
        #expect(late == nil)
        #expect(file.reads > 0)
        #expect(tracker.committedFrames == before)
    }

    @Test func aCommitFrameIsNotACommitUntilItsPageIsWritten() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 3))
        var tracker = WALTracker()
        let file = MemoryFile()
        let last = try #require(recorded.commitFrames.last)
        _ = recorded.replay(into: file, tracker: &tracker, frames: last - 1)
        let before = tracker.committedFrames
        // The commit frame's header alone, then its page one byte short: no commit.
        let start = 32 + (last - 1) * recorded.frameSize
        let header = Array(recorded.wal[start..<start + 24])
        file.write(header, at: start)
        #expect(header.withUnsafeBytes { tracker.noteWrite(offset: Int64(start), data: $0, reader: file) } == nil)
        let page = Array(recorded.wal[start + 24..<start + recorded.frameSize - 1])
        file.write(page, at: start + 24)
        #expect(page.withUnsafeBytes { tracker.noteWrite(offset: Int64(start + 24), data: $0, reader: file) } == nil)
        #expect(tracker.committedFrames == before)
        let lastByte = [recorded.wal[start + recorded.frameSize - 1]]
        file.write(lastByte, at: start + recorded.frameSize - 1)
        let commit = lastByte.withUnsafeBytes { tracker.noteWrite(offset: Int64(start + recorded.frameSize - 1), data: $0, reader: file) }
        #expect(commit?.frame == UInt32(last))
    }

    @Test func aLogFirstSeenMidwayIsScannedWhole() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 10))
        let file = MemoryFile()
        file.bytes = Array(recorded.wal)
        var tracker = WALTracker()
        #expect(tracker.rescan(file)?.frame == UInt32(recorded.commitFrames.last!))
        #expect(tracker.committedFrames == UInt32(recorded.frameCount))
    }

    @Test func aLargeTransactionSpillingIntoTheLogCommitsOnce() throws {
        // 300 rows of 300 bytes per transaction with 512-byte pages: many frames each.
        let recorded = try #require(RecordedWAL.make(transactions: 4, pageSize: 512, rowsPerTransaction: 300))
        var tracker = WALTracker()
        let commits = recorded.replay(into: MemoryFile(), tracker: &tracker)
        #expect(commits.count == 5)
        #expect(recorded.frameCount > 200)
    }

    /// Writes `pages` (4 KiB pages of `wal`, by index) into `file` as the kernel writes a
    /// cached log back: whole pages, in the order given. Returns what the tracker reported.
    static func writeBack(_ wal: [UInt8], pages: [Int], into file: MemoryFile, tracker: inout WALTracker) -> [WALCommit] {
        var commits: [WALCommit] = []
        for index in pages {
            let range = index * 4096..<min((index + 1) * 4096, wal.count)
            let data = Array(wal[range])
            file.write(data, at: range.lowerBound)
            if let commit = data.withUnsafeBytes({ tracker.noteWrite(offset: Int64(range.lowerBound), data: $0, reader: file, inOrder: false) }) {
                commits.append(commit)
            }
        }
        return commits
    }

    @Test func writtenBackInPagesInAnyOrderEveryCommitIsCounted() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 25))
        let pageCount = (recorded.wal.count + 4095) / 4096
        var random = SeededGenerator(seed: 7)
        var order = Array(0..<pageCount)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        var tracker = WALTracker()
        let file = MemoryFile()
        let commits = Self.writeBack(recorded.wal, pages: order, into: file, tracker: &tracker)
        #expect(tracker.committedFrames == UInt32(recorded.frameCount))
        #expect(commits.last?.frame == UInt32(recorded.commitFrames.last!))
        // Every transaction counted once, however many a write completed.
        #expect(commits.map(\.transactions).reduce(0, +) == recorded.commitFrames.count)
        // A page written back again (the same bytes) is no news.
        let again = Self.writeBack(recorded.wal, pages: [pageCount / 2], into: file, tracker: &tracker)
        #expect(again.isEmpty)
    }

    @Test func aRestartWrittenBackBeforeItsHeaderIsFoundWhenTheHeaderComes() throws {
        let first = try #require(RecordedWAL.make(transactions: 12))
        let second = try #require(RecordedWAL.make(transactions: 2))
        var tracker = WALTracker()
        let file = MemoryFile()
        let firstPages = (first.wal.count + 4095) / 4096
        _ = Self.writeBack(first.wal, pages: Array(0..<firstPages), into: file, tracker: &tracker)
        #expect(tracker.committedFrames == UInt32(first.frameCount))
        // The new generation's pages, the one holding its header last (background
        // write-back starts where it stopped before).
        let secondPages = (second.wal.count + 4095) / 4096
        let commits = Self.writeBack(second.wal, pages: Array((0..<secondPages).reversed()), into: file, tracker: &tracker)
        #expect(commits.count == 1)
        #expect(commits.first?.frame == UInt32(second.commitFrames.last!))
        #expect(commits.first?.transactions == second.commitFrames.count)
        #expect(tracker.header?.salt1 == second.wal.withUnsafeBytes { SQLiteFormat.bigEndian32($0, at: 16) })
    }

    @Test func aRestartedLogStartsOver() throws {
        let first = try #require(RecordedWAL.make(transactions: 5))
        let second = try #require(RecordedWAL.make(transactions: 2))
        var tracker = WALTracker()
        let file = MemoryFile()
        _ = first.replay(into: file, tracker: &tracker)
        // A new generation (other salts) written over the old frames, as after a checkpoint.
        let commits = second.replay(into: file, tracker: &tracker)
        #expect(commits.map { Int($0.frame) } == second.commitFrames)
        #expect(tracker.committedFrames == UInt32(second.frameCount))
        tracker.noteTruncate(to: 0)
        #expect(tracker.header == nil && tracker.committedFrames == 0)
    }

    @Test func corruptedLogsNeverCommitWhatIsNotThere() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 8))
        var random = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var bytes = recorded.wal
            let flips = Int.random(in: 1...4, using: &random)
            for _ in 0..<flips {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                bytes[at] ^= UInt8.random(in: 1...255, using: &random)
            }
            let damaged = RecordedWAL(wal: bytes, database: recorded.database, pageSize: recorded.pageSize)
            var tracker = WALTracker()
            let commits = damaged.replay(into: MemoryFile(), tracker: &tracker)
            // Every commit reported is one of the real ones, in order, and none after a damaged frame.
            let real = Set(recorded.commitFrames.map(UInt32.init))
            #expect(commits.allSatisfy { real.contains($0.frame) })
            #expect(commits.map(\.frame) == commits.map(\.frame).sorted())
            let firstDamage = zip(bytes, recorded.wal).enumerated().first { $0.element.0 != $0.element.1 }!.offset
            if let last = commits.last {
                #expect(32 + Int(last.frame) * recorded.frameSize <= firstDamage || firstDamage < 0)
            }
        }
    }

    @Test func randomBytesAndHostileWritesNeverCrash() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<200 {
            var tracker = WALTracker()
            let file = MemoryFile()
            // Half the rounds start with a valid-looking header: magic, version, a page size.
            if round % 2 == 0 {
                var header = [UInt8](repeating: 0, count: 32)
                header[0...3] = [0x37, 0x7f, 0x06, 0x82]
                header[4...7] = [0x00, 0x2d, 0xe2, 0x18]
                header[8...11] = [0x00, 0x00, 0x02, 0x00]
                file.write(header, at: 0)
            }
            for _ in 0..<50 {
                let length = [1, 7, 8, 24, 32, 512, 536, 4096].randomElement(using: &random)!
                let offset = [0, 32, 56, Int.random(in: 0..<100_000, using: &random)].randomElement(using: &random)!
                var data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
                if length >= 8 && Bool.random(using: &random) { data[4...7] = [0, 0, 0, 1] }   // claims a commit
                file.write(data, at: offset)
                let commit = data.withUnsafeBytes { tracker.noteWrite(offset: Int64(offset), data: $0, reader: file) }
                #expect(commit == nil)
            }
            tracker.noteTruncate(to: Int64.random(in: 0..<50_000, using: &random))
        }
        // Offsets beyond any frame number, and negative ones.
        var tracker = WALTracker()
        let file = MemoryFile()
        let data: [UInt8] = [1, 2, 3, 4, 0, 0, 0, 1]
        #expect(data.withUnsafeBytes { tracker.noteWrite(offset: Int64.max - 4, data: $0, reader: file) } == nil)
        #expect(data.withUnsafeBytes { tracker.noteWrite(offset: -8, data: $0, reader: file) } == nil)
    }
}

@Suite struct SQLiteFormatTests {
    @Test func databaseHeaders() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 1))
        let header = try #require(SQLiteDatabaseHeader(Array(recorded.database.prefix(100))))
        #expect(header.pageSize == 4096)
        #expect(header.writeVersion == 2 && header.readVersion == 2)
        #expect(SQLiteDatabaseHeader(Array(recorded.database.prefix(99))) == nil)
        var wrongMagic = Array(recorded.database.prefix(100))
        wrongMagic[3] ^= 1
        #expect(SQLiteDatabaseHeader(wrongMagic) == nil)
        var badPageSize = Array(recorded.database.prefix(100))
        badPageSize[16] = 0x03
        badPageSize[17] = 0x00
        #expect(SQLiteDatabaseHeader(badPageSize) == nil)
        var random = SystemRandomNumberGenerator()
        for _ in 0..<1000 {
            let bytes = (0..<Int.random(in: 0...120, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            #expect(SQLiteDatabaseHeader(bytes) == nil)
        }
    }

    @Test func journalsAndCompanionNames() {
        #expect(SQLiteFormat.isHotJournalHeader(SQLiteFormat.journalMagic + [0, 0, 0, 1]))
        #expect(!SQLiteFormat.isHotJournalHeader([UInt8](repeating: 0, count: 28)))
        #expect(!SQLiteFormat.isHotJournalHeader(Array(SQLiteFormat.journalMagic.prefix(7))))
        #expect(SQLiteFormat.Companion.of(Array("app.db-journal".utf8))?.database == Array("app.db".utf8))
        #expect(SQLiteFormat.Companion.of(Array("app.db-wal".utf8))?.0 == .wal)
        #expect(SQLiteFormat.Companion.of(Array("-wal".utf8)) == nil)
        #expect(SQLiteFormat.Companion.of(Array("app.db-shm".utf8)) == nil)
    }
}
