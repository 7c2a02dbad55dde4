import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SnapFSSnapshots
import SystemPackage

/// What an inode is to SQLite commit detection, known from its name.
enum SQLiteRole: UInt8 {
    case none = 0
    case journal = 1
    case wal = 2
}

/// A companion file about to be removed.
enum SQLiteRemoval {
    /// A hot rollback journal: its removal commits (DELETE mode) the database `database`.
    case journal(database: [UInt8])
    /// A WAL going away (its database was closed by the last connection).
    case wal(BackingKey)
}

/// SQLite commit detection on the change path: the journal's removal (DELETE), its
/// truncation to 0 (TRUNCATE), the zeroing of its header (PERSIST, and DELETE with
/// `locking_mode=EXCLUSIVE`), and the write that makes a WAL commit frame valid (WAL). Each
/// is seen inside the request that makes it, while the application still holds SQLite's
/// write lock; the snapshot is taken after the operation, before the reply, and outside
/// the freeze gate (a tree snapshot closes the gate itself).
///
/// Everything here reads files that anybody may have written: a file that only looks
/// like a journal or a WAL never triggers and is stored like any other file.
extension SnapFileSystem {
    /// At lookup and create: marks `-journal` and `-wal` files and remembers their names.
    @inline(__always)
    func classifySQLiteCompanion(_ inode: Inode, name: UnsafePointer<CChar>, in dir: Inode) {
        guard sqlite.isActive, let (companion, _) = Self.companion(named: name) else { return }
        inode.sqlite.role.store(companion == .journal ? SQLiteRole.journal.rawValue : SQLiteRole.wal.rawValue, ordering: .relaxed)
        inode.remember(name: name, in: dir)
    }

    // MARK: the operations that end a transaction

    /// The companion `name` is, and its database's name; nil for every other name.
    @inline(__always)
    static func companion(named name: UnsafePointer<CChar>) -> (SQLiteFormat.Companion, database: [UInt8])? {
        let length = strlen(name)
        // Both suffixes end in "l": one comparison for every other name.
        guard length > 4, name[length - 1] == CChar(UInt8(ascii: "l")) else { return nil }
        return SQLiteFormat.Companion.of(Array(UnsafeRawBufferPointer(start: name, count: length)))
    }

    /// `name` in `dirFD` opened for reading, not following a symlink and not blocking on
    /// a FIFO; -1 if that fails.
    static func openForReading(_ name: UnsafePointer<CChar>, in dirFD: Int32) -> Int32 {
        snapfs_openat(dirFD, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0)
    }

    static func openForReading(_ name: [UInt8], in dirFD: Int32) -> Int32 {
        name.withCString { openForReading($0, in: dirFD) }
    }

    func sqliteRemoval(of name: UnsafePointer<CChar>, in dir: Inode) -> SQLiteRemoval? {
        guard sqlite.isActive, !dir.inSnapshotView, let (companion, database) = Self.companion(named: name) else { return nil }
        return try? dir.withFD { (dirFD) throws(Errno) -> SQLiteRemoval? in
            switch companion {
            case .journal:
                let fd = Self.openForReading(name, in: dirFD)
                guard fd >= 0 else { return nil }
                defer { close(fd) }
                return Self.isHotJournal(fd) ? .journal(database: database) : nil
            case .wal:
                let st = try FileStatus.of(name, in: dirFD)
                return st.isRegular ? .wal(BackingKey(st)) : nil
            }
        }
    }

    func sqliteRemoved(_ removal: SQLiteRemoval, in dir: Inode) {
        switch removal {
        case let .journal(database):
            let location = DatabaseLocation(directory: dir, name: database)
            sqlite.journalRemoved(of: location)
            sqliteCommitted(SQLiteCommit(location: location, mode: .delete), serving: nil)
        case let .wal(key):
            sqlite.logs.walRemoved(key)
        }
    }

    /// Before a truncation: whether it ends a hot journal (TRUNCATE mode).
    func sqliteTruncationCommits(_ node: Inode, to size: Int64) -> Bool {
        guard size == 0, node.sqlite.role.load(ordering: .relaxed) == SQLiteRole.journal.rawValue else { return false }
        return withReadableDescriptor(of: node) { Self.isHotJournal($0) } ?? false
    }

    func sqliteTruncated(_ node: Inode, to size: Int64, endingJournal: Bool) -> SQLiteCommit? {
        switch SQLiteRole(rawValue: node.sqlite.role.load(ordering: .relaxed)) {
        case .journal where endingJournal:
            return journalEnded(node, mode: .truncate)
        case .wal:
            sqlite.logs.walTruncated(node.key, to: size)
            return nil
        default:
            return nil
        }
    }

    /// Before a write: whether it zeroes the header of a hot journal (PERSIST mode).
    func sqliteWriteEndsJournal(_ file: OpenFile, _ data: UnsafeRawBufferPointer, offset: Int64) -> Bool {
        guard offset == 0, data.count >= SQLiteFormat.journalMagic.count,
              file.inode.sqlite.role.load(ordering: .relaxed) == SQLiteRole.journal.rawValue,
              data.prefix(SQLiteFormat.journalMagic.count).allSatisfy({ $0 == 0 }) else { return false }
        return withReadableDescriptor(of: file.inode, file: file) { Self.isHotJournal($0) } ?? false
    }

    /// After a write to a journal or WAL.
    func sqliteWritten(_ file: OpenFile, _ data: UnsafeRawBufferPointer, offset: Int64, endingJournal: Bool) -> SQLiteCommit? {
        switch SQLiteRole(rawValue: file.inode.sqlite.role.load(ordering: .relaxed)) {
        case .journal where endingJournal:
            return journalEnded(file.inode, mode: .persist)
        case .wal:
            let key = file.inode.key
            let found = withReadableDescriptor(of: file.inode, file: file) { fd in
                sqlite.logs.walWritten(key, offset: offset, data: data, reader: DescriptorReader(fd: fd),
                                       inOrder: writesBypassKernelCache(file))
            }
            guard let (commit, log) = found ?? nil, let location = databaseLocation(of: file.inode) else { return nil }
            return SQLiteCommit(location: location, mode: .wal, wal: commit, walLog: log, walKey: key)
        default:
            return nil
        }
    }

    func journalCommit(_ node: Inode, mode: JournalMode) -> SQLiteCommit? {
        guard let location = databaseLocation(of: node) else { return nil }
        return SQLiteCommit(location: location, mode: mode)
    }

    /// The database a journal or WAL belongs to: the same directory, the name without the suffix.
    func databaseLocation(of companion: Inode) -> DatabaseLocation? {
        guard let (parent, name) = companion.rememberedName else { return nil }
        let bytes = name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        guard let (_, database) = SQLiteFormat.Companion.of(bytes) else { return nil }
        return DatabaseLocation(directory: parent, name: database)
    }

    /// Calls `body` with a descriptor that reads `inode`: `file`'s own unless it is write-only.
    func withReadableDescriptor<R>(of inode: Inode, file: OpenFile? = nil, _ body: (Int32) -> R) -> R? {
        if let file, file.flags & O_ACCMODE != O_WRONLY { return body(file.fd) }
        guard let fd = try? inode.withFD({ (pathFD) throws(Errno) in try proc.reopen(pathFD, flags: O_RDONLY | O_NONBLOCK) }) else { return nil }
        defer { close(fd) }
        return body(fd)
    }

    static func isHotJournal(_ fd: Int32) -> Bool {
        var header = [UInt8](repeating: 0, count: SQLiteFormat.journalMagic.count)
        let n = header.withUnsafeMutableBytes { DescriptorReader(fd: fd).read(into: $0, at: 0) }
        return n == header.count && SQLiteFormat.isHotJournalHeader(header)
    }
}
