import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SystemPackage

/// Rolls a snapshot's copy of a rollback-mode database back to its last committed state.
///
/// A tree snapshot taken while a database is in the middle of a transaction holds the
/// database with some of the transaction's pages written and, beside it, a *hot* journal
/// (a `-journal` whose header starts with the magic) holding those pages' originals. SQLite
/// opening such a database rolls the journal back first, which a read-only reader cannot
/// do ("attempt to write a readonly database"). So before a snapshot is published snapfs
/// does that rollback itself, exactly as SQLite's pager would for a hot journal: each
/// journal segment's records are checked (checksum over every 200th byte plus the nonce)
/// and their pages written back, stopping at the first record that is torn or bad; the
/// database is cut to the size the first header gives; then the journal is removed from
/// the snapshot. A database the snapshot shares with the live tree (hard links) is
/// replaced by a private copy first: the live file is never touched.
///
/// Facts relied on (SQLite's `pager.c`, documented in docs/sqlite.md): a header is 28
/// bytes (magic, record count, nonce, original size in pages, sector size, page size),
/// padded to the sector size; a record is a 4-byte page number, the page, a 4-byte
/// checksum; a count of 0xFFFFFFFF means "to the end of the file"; for a hot journal a
/// count of 0 means no records; page 0 and the page holding the lock byte are never
/// played back.
enum HotJournal {
    static let headerSize = 28
    /// SQLite's PENDING_BYTE: the page that holds it is never written.
    static let pendingByte: Int64 = 0x4000_0000

    /// Whether `journal` (a NUL-terminated name in `dir`) is a hot journal; if so rolls the
    /// database it belongs to back and removes the journal. Returns whether it did.
    @discardableResult
    static func rollBack(in dir: Int32, journal: [CChar], seal: Bool = true) throws(Errno) -> Bool {
        let journalName = Array(journal.dropLast())
        let suffix = Array("-journal".utf8CString.dropLast())
        guard journalName.count > suffix.count, journalName.suffix(suffix.count).elementsEqual(suffix) else { return false }
        let database = Array(journalName.dropLast(suffix.count)) + [0]
        let input = snapfs_openat(dir, journal, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0)
        if input < 0 { return false }
        defer { close(input) }
        var journalStatus = stat()
        guard fstat(input, &journalStatus) == 0, journalStatus.st_mode & S_IFMT == S_IFREG else { return false }
        var header = [UInt8](repeating: 0, count: headerSize)
        guard readFully(input, &header, at: 0), SQLiteFormat.isHotJournalHeader(header) else { return false }
        var databaseStatus = stat()
        guard fstatat(dir, database, &databaseStatus, AT_SYMLINK_NOFOLLOW) == 0,
              databaseStatus.st_mode & S_IFMT == S_IFREG else { return false }
        if databaseStatus.st_size > 0 {
            // A database of the snapshot's own may be sealed already (see ``Seal``).
            if databaseStatus.st_nlink <= 1 { _ = try Seal.remove(database, in: dir) }
            let output = try privateCopy(database, in: dir, status: databaseStatus)
            defer { close(output) }
            try play(input, size: Int64(journalStatus.st_size), into: output)
            var times = [databaseStatus.st_atim, databaseStatus.st_mtim]
            try syscall(futimens(output, &times))
            if seal { try Seal.apply(output) }
        }
        try syscall(unlinkat(dir, journal, 0))
        return true
    }

    /// The database `name` in `dir` open for writing, as a file of the snapshot's own: a
    /// file with other links (the live one's, with hard links) is copied and the copy
    /// renamed over it, with the same owner, mode, attributes and times.
    static func privateCopy(_ name: [CChar], in dir: Int32, status: stat) throws(Errno) -> Int32 {
        if status.st_nlink <= 1 {
            return try syscall(snapfs_openat(dir, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0))
        }
        let source = try syscall(snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0))
        defer { close(source) }
        let temporary = Array(".snapfs-rollback-\(UInt32.random(in: 0...UInt32.max))".utf8CString)
        let copy = try syscall(snapfs_openat(dir, temporary, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600))
        do throws(Errno) {
            try FileCopy.copyData(from: source, to: copy, size: Int64(status.st_size))
            try syscall(fchown(copy, status.st_uid, status.st_gid))
            let buffers = ExtendedAttributes()
            defer { buffers.deallocate() }
            _ = try buffers.copy(from: .descriptor(source), to: .descriptor(copy))
            try syscall(fchmod(copy, status.st_mode & 0o7777))
            try syscall(renameat(dir, temporary, dir, name))
        } catch {
            close(copy)
            unlinkat(dir, temporary, 0)
            throw error
        }
        return copy
    }

    /// Plays the journal open at `journal` (`size` bytes) back into the database `output`.
    static func play(_ journal: Int32, size: Int64, into output: Int32) throws(Errno) {
        var offset: Int64 = 0
        var first = true
        while offset + Int64(headerSize) <= size {
            var header = [UInt8](repeating: 0, count: headerSize)
            guard readFully(journal, &header, at: offset), SQLiteFormat.isHotJournalHeader(header) else { return }
            let fields = header.withUnsafeBytes { bytes in
                (SQLiteFormat.bigEndian32(bytes, at: 8), SQLiteFormat.bigEndian32(bytes, at: 12), SQLiteFormat.bigEndian32(bytes, at: 16),
                 SQLiteFormat.bigEndian32(bytes, at: 20), SQLiteFormat.bigEndian32(bytes, at: 24))
            }
            guard let count = fields.0, let nonce = fields.1, let originalPages = fields.2,
                  let sector = fields.3, let rawPageSize = fields.4,
                  let pageSize = SQLiteFormat.validPageSize(rawPageSize),
                  sector >= 32, sector <= 65536, sector & (sector - 1) == 0 else { return }
            let headerBytes = Int64(sector)
            let recordSize = Int64(pageSize) + 8
            var records = Int64(count)
            if count == 0xFFFF_FFFF { records = max(0, (size - offset - headerBytes) / recordSize) }
            if first {
                try syscall(ftruncate(output, off_t(Int64(originalPages) * Int64(pageSize))))
                first = false
            }
            var position = offset + headerBytes
            var record = [UInt8](repeating: 0, count: Int(recordSize))
            for _ in 0..<records {
                guard position + recordSize <= size, readFully(journal, &record, at: position) else { return }
                let (page, checksum) = record.withUnsafeBytes { bytes in
                    (SQLiteFormat.bigEndian32(bytes, at: 0) ?? 0, SQLiteFormat.bigEndian32(bytes, at: 4 + pageSize) ?? 0)
                }
                var sum = nonce
                var i = pageSize - 200
                while i > 0 {
                    sum = sum &+ UInt32(record[4 + i])
                    i -= 200
                }
                // A torn or foreign record ends the playback, as in SQLite.
                guard sum == checksum, page != 0, Int64(page) != pendingByte / Int64(pageSize) + 1 else { return }
                if page <= originalPages {
                    var done = 0
                    while done < pageSize {
                        done += try syscallRetrying {
                            record.withUnsafeBytes { pwrite(output, $0.baseAddress! + 4 + done, pageSize - done, off_t(Int64(page - 1) * Int64(pageSize)) + off_t(done)) }
                        }
                    }
                }
                position += recordSize
            }
            if count == 0xFFFF_FFFF { return }
            // The next segment's header starts at the next sector boundary.
            offset = (position + headerBytes - 1) / headerBytes * headerBytes
        }
    }

    /// Whether `buffer` could be filled from `offset` (a shorter read: the end of the file).
    private static func readFully(_ fd: Int32, _ buffer: inout [UInt8], at offset: Int64) -> Bool {
        (try? FileContent.readFully(fd, &buffer, at: off_t(offset))) == buffer.count
    }
}
