/// The few facts of SQLite's on-disk format that commit detection needs (the file-format
/// document and `pager.c` / `wal.c`; written down in docs/sqlite.md). Every parser here takes bytes
/// that anybody may have written: it checks lengths and ranges and never traps.
public enum SQLiteFormat {
    /// `"SQLite format 3\0"`, the first 16 bytes of every database file.
    public static let databaseMagic: [UInt8] = Array("SQLite format 3".utf8) + [0]
    /// The first 8 bytes of a rollback journal whose header is valid (a *hot* journal).
    public static let journalMagic: [UInt8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]
    /// Bytes of the database header snapfs reads.
    public static let databaseHeaderSize = 100
    /// PERSIST mode ends a transaction by zeroing this many bytes at the journal's start.
    public static let persistZeroedBytes = 28

    /// The companion files of a database named `NAME`.
    public enum Companion: Equatable, Sendable {
        case journal
        case wal

        public var suffix: String { self == .journal ? "-journal" : "-wal" }

        /// The companion `name` is, and the database name it belongs to; nil for other names.
        public static func of(_ name: [UInt8]) -> (Companion, database: [UInt8])? {
            for companion in [Companion.journal, .wal] {
                let suffix = Array(companion.suffix.utf8)
                if name.count > suffix.count && name.suffix(suffix.count).elementsEqual(suffix) {
                    return (companion, Array(name.dropLast(suffix.count)))
                }
            }
            return nil
        }
    }

    /// Whether `bytes` start with a valid rollback-journal header magic.
    public static func isHotJournalHeader(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.count >= journalMagic.count && bytes.prefix(journalMagic.count).elementsEqual(journalMagic)
    }

    /// A big-endian 32-bit integer at `offset` of `bytes`, or nil if it is out of range.
    @inline(__always)
    package static func bigEndian32(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32? {
        guard offset >= 0, offset + 4 <= bytes.count else { return nil }
        return UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
            | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    @inline(__always)
    static func bigEndian16(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt16? {
        guard offset >= 0, offset + 2 <= bytes.count else { return nil }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    /// A page size as SQLite stores it: a power of two from 512 to 65536 (where 65536 is
    /// stored as 1 in the 16-bit database header field).
    package static func validPageSize(_ raw: UInt32) -> Int? {
        let size = raw == 1 ? 65536 : Int(raw)
        guard size >= 512, size <= 65536, size & (size - 1) == 0 else { return nil }
        return size
    }
}

/// The fields of a database header (the first 100 bytes of page 1) that snapfs uses.
public struct SQLiteDatabaseHeader: Equatable, Sendable {
    public var pageSize: Int
    /// Offsets 18/19: 1 = rollback journal, 2 = WAL.
    public var writeVersion: UInt8
    public var readVersion: UInt8
    /// Offset 24: incremented by every rollback-mode commit.
    public var changeCounter: UInt32
    /// Offset 28: the size in pages, valid when `versionValidFor == changeCounter`.
    public var pageCount: UInt32
    public var versionValidFor: UInt32

    /// Parses a header; nil unless `bytes` starts with the magic and names a valid page size.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= SQLiteFormat.databaseHeaderSize,
              bytes.prefix(16).elementsEqual(SQLiteFormat.databaseMagic),
              let rawSize = SQLiteFormat.bigEndian16(bytes, at: 16),
              let size = SQLiteFormat.validPageSize(UInt32(rawSize)),
              let counter = SQLiteFormat.bigEndian32(bytes, at: 24),
              let pages = SQLiteFormat.bigEndian32(bytes, at: 28),
              let valid = SQLiteFormat.bigEndian32(bytes, at: 92) else { return nil }
        pageSize = size
        writeVersion = bytes[18]
        readVersion = bytes[19]
        changeCounter = counter
        pageCount = pages
        versionValidFor = valid
    }

    public init?(_ bytes: [UInt8]) {
        guard let header = bytes.withUnsafeBytes({ SQLiteDatabaseHeader($0) }) else { return nil }
        self = header
    }
}
