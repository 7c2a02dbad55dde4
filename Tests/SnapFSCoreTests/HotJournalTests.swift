import CLinux
import Glibc
@testable import SnapFSBacking
@testable import SnapFSCore
@testable import SnapFSSQLite
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// HotJournal plays a rollback journal back the way SQLite's pager does for a hot journal.
struct HotJournalTests {
    static let pageSize = 512

    /// A journal header: magic, count, nonce, original pages, sector size, page size.
    func header(count: UInt32, nonce: UInt32, originalPages: UInt32, sector: UInt32 = 512) -> [UInt8] {
        var bytes = SQLiteFormat.journalMagic
        for value in [count, nonce, originalPages, sector, UInt32(Self.pageSize)] {
            bytes += [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
        }
        return bytes + [UInt8](repeating: 0, count: Int(sector) - bytes.count)
    }

    func record(page: UInt32, fill: UInt8, nonce: UInt32, corrupt: Bool = false) -> [UInt8] {
        let data = [UInt8](repeating: fill, count: Self.pageSize)
        var sum = nonce
        var i = Self.pageSize - 200
        while i > 0 { sum = sum &+ UInt32(data[i]); i -= 200 }
        if corrupt { sum = sum &+ 1 }
        let be = { (v: UInt32) in [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        return be(page) + data + be(sum)
    }

    /// Plays `journal` over a database of `pages` pages filled with 0xEE; returns its bytes.
    func play(_ journal: [UInt8], pages: Int) throws -> [UInt8] {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let dbPath = dir.file("db")
        let db = open(dbPath, O_RDWR)
        defer { close(db) }
        let content = [UInt8](repeating: 0xEE, count: pages * Self.pageSize)
        _ = content.withUnsafeBytes { pwrite(db, $0.baseAddress!, $0.count, 0) }
        let journalPath = dir.file("db-journal")
        let j = open(journalPath, O_RDWR)
        defer { close(j) }
        _ = journal.withUnsafeBytes { pwrite(j, $0.baseAddress!, $0.count, 0) }
        try HotJournal.play(j, size: Int64(journal.count), into: db)
        var st = stat()
        fstat(db, &st)
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        _ = out.withUnsafeMutableBytes { pread(db, $0.baseAddress!, $0.count, 0) }
        return out
    }

    func page(_ bytes: [UInt8], _ n: Int) -> [UInt8] { Array(bytes[(n - 1) * Self.pageSize..<n * Self.pageSize]) }

    @Test func recordsAreWrittenBackAndTheFileIsCutToItsOriginalSize() throws {
        let journal = header(count: 2, nonce: 7, originalPages: 2) + record(page: 1, fill: 0x11, nonce: 7) + record(page: 2, fill: 0x22, nonce: 7)
        let result = try play(journal, pages: 4)
        #expect(result.count == 2 * Self.pageSize)
        #expect(page(result, 1) == [UInt8](repeating: 0x11, count: Self.pageSize))
        #expect(page(result, 2) == [UInt8](repeating: 0x22, count: Self.pageSize))
    }

    @Test func aBadChecksumEndsThePlayback() throws {
        let journal = header(count: 3, nonce: 9, originalPages: 3) + record(page: 1, fill: 0x11, nonce: 9)
            + record(page: 2, fill: 0x22, nonce: 9, corrupt: true) + record(page: 3, fill: 0x33, nonce: 9)
        let result = try play(journal, pages: 3)
        #expect(page(result, 1) == [UInt8](repeating: 0x11, count: Self.pageSize))
        #expect(page(result, 2) == [UInt8](repeating: 0xEE, count: Self.pageSize))
        #expect(page(result, 3) == [UInt8](repeating: 0xEE, count: Self.pageSize))
    }

    @Test func aCountOfZeroInAHotJournalMeansNoRecords() throws {
        let journal = header(count: 0, nonce: 1, originalPages: 3) + record(page: 1, fill: 0x11, nonce: 1)
        let result = try play(journal, pages: 3)
        #expect(page(result, 1) == [UInt8](repeating: 0xEE, count: Self.pageSize))
    }

    @Test func allOnesMeansToTheEndAndATornRecordIsIgnored() throws {
        let journal = header(count: 0xFFFF_FFFF, nonce: 3, originalPages: 3) + record(page: 2, fill: 0x22, nonce: 3)
            + Array(record(page: 3, fill: 0x33, nonce: 3).prefix(100))
        let result = try play(journal, pages: 3)
        #expect(page(result, 2) == [UInt8](repeating: 0x22, count: Self.pageSize))
        #expect(page(result, 3) == [UInt8](repeating: 0xEE, count: Self.pageSize))
    }

    @Test func laterSegmentsStartAtTheNextSectorAndPagesPastTheOriginalSizeAreSkipped() throws {
        var journal = header(count: 1, nonce: 5, originalPages: 2) + record(page: 1, fill: 0x11, nonce: 5)
        journal += [UInt8](repeating: 0, count: 1536 - journal.count)  // pad to the next 512-byte sector
        journal += header(count: 2, nonce: 6, originalPages: 2) + record(page: 2, fill: 0x22, nonce: 6) + record(page: 3, fill: 0x33, nonce: 6)
        let result = try play(journal, pages: 3)
        #expect(result.count == 2 * Self.pageSize)
        #expect(page(result, 1) == [UInt8](repeating: 0x11, count: Self.pageSize))
        #expect(page(result, 2) == [UInt8](repeating: 0x22, count: Self.pageSize))
    }

    @Test func garbageThatIsNotAJournalChangesNothing() throws {
        var journal = [UInt8](repeating: 0xAB, count: 2048)
        journal[0] = 0
        let result = try play(journal, pages: 2)
        #expect(result == [UInt8](repeating: 0xEE, count: 2 * Self.pageSize))
    }
}

/// PathText keeps names apart and on one line.
struct PathTextTests {
    @Test func printableNamesStayAsTheyAre() {
        #expect(PathText.escaped(Array("dir/Grüße 日本.txt".utf8)) == "dir/Grüße 日本.txt")
    }

    @Test func controlBytesBackslashesAndBadUTF8AreEscaped() {
        #expect(PathText.escaped(Array("a\nb\tc\\d".utf8)) == "a\\nb\\tc\\\\d")
        #expect(PathText.escaped([0x62, 0x61, 0x64, 0xFF]) == "bad\\xff")
        #expect(PathText.escaped([0x01, 0x7F]) == "\\x01\\x7f")
        #expect(PathText.escaped([0xC3]) == "\\xc3")  // a lead byte alone
    }

    @Test func differentNamesPrintDifferently() {
        #expect(PathText.escaped([0x61, 0xFF]) != PathText.escaped([0x61, 0xFE]))
        #expect(PathText.escaped(Array("a\\xff".utf8)) != PathText.escaped([0x61, 0xFF]))
    }
}

/// DirectoryCursor walks with one descriptor and notices a directory moved under it.
struct DirectoryCursorTests {
    @Test func downAndUpAgain() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("a")
        _ = dir.directory("a/b")
        let root = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        let cursor = try DirectoryCursor(at: root)
        let top = cursor.status.st_ino
        try cursor.descend(Array("a".utf8))
        try cursor.descend(Array("b".utf8))
        #expect(cursor.depth == 2)
        try cursor.ascend()
        try cursor.ascend()
        #expect(cursor.status.st_ino == top)
        #expect(throws: Errno.invalidArgument) { try cursor.ascend() }
    }

    @Test func aSymlinkIsNeverEntered() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        symlink("/etc", dir.path + "/esc")
        let root = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        let cursor = try DirectoryCursor(at: root)
        #expect(throws: Errno.self) { try cursor.descend(Array("esc".utf8)) }
        #expect(cursor.depth == 0)
    }

    @Test func aDirectoryMovedMeanwhileStopsTheWayUp() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("a")
        _ = dir.directory("a/b")
        _ = dir.directory("elsewhere")
        let root = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        let cursor = try DirectoryCursor(at: root)
        try cursor.descend(Array("a".utf8))
        try cursor.descend(Array("b".utf8))
        rename(dir.path + "/a/b", dir.path + "/elsewhere/b")
        #expect(throws: Errno.staleNFSFileHandle) { try cursor.ascend() }
    }
}
