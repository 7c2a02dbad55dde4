import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// Empty `-wal` and `-shm` files beside the WAL-mode databases of a tree snapshot.
///
/// A WAL-mode database whose last connection has closed has neither file, and SQLite, even
/// opening it read-only, must then create its `-shm`: in a snapshot, which nobody may write,
/// the open fails ("unable to open database file"). With an empty `-wal` and an empty `-shm`
/// present, a read-only connection needs to write nothing: the log is empty, so the database
/// file alone is the committed state, and a `-shm` it cannot write makes SQLite keep its
/// index in private memory. So every snapshot built file by file gives each WAL-mode
/// database (header bytes 18 and 19 equal to 2) that lacks them an empty `-wal` and `-shm`,
/// with the database's owner, group, permission bits (read and write only) and times. The
/// database's own bytes are never changed (with hard links they are the live file's).
/// `diff` and `restore` treat an empty `-wal` or `-shm` the same as none.
enum SQLiteCompanion {
    static let suffixes = ["-wal", "-shm"]

    /// Files already found not to be databases, by the live file's inode number, size and
    /// modification time when a snapshot's walk placed it. The live tree keeps its inodes
    /// from one snapshot to the next (a hard-link snapshot even shares them, and a change
    /// through the mount copies a shared file up to a new inode first), so a walk reads
    /// the header of only the files that changed. Not the change time: each hard link made
    /// moves it. Each identity is kept as a 64-bit hash, so the set holds up to
    /// `notDatabasesLimit` files in about 40 MiB (then it starts over). A file made to look
    /// the same (number, size and time to the nanosecond), or one in 2^64 by chance, would
    /// only miss its companions and its seal.
    /// In shards with a lock each: the build's threads look up every file, and with one
    /// lock a thread preempted while holding it held up the others (a 30,000-file snapshot
    /// took 0.5–0.8 s instead of 0.17 s at times).
    private static let notDatabases = (0..<64).map { _ in NotDatabaseShard() }
    private final class NotDatabaseShard: Sendable {
        let keys = Mutex<Set<UInt64>>([])
    }
    static let notDatabasesLimit = 4_000_000

    private static func identity(_ status: stat) -> UInt64 {
        // splitmix64's finalizer over each part in turn.
        func mix(_ value: UInt64) -> UInt64 {
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let modified = UInt64(bitPattern: Int64(status.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(status.st_mtim.tv_nsec))
        return mix(mix(mix(UInt64(status.st_ino)) ^ UInt64(bitPattern: Int64(status.st_size))) ^ modified)
    }

    /// Whether the file with this status was found not to be a database.
    static func knownNotDatabase(_ status: stat) -> Bool {
        let key = identity(status)
        return notDatabases[Int(key >> 58)].keys.withLock { $0.contains(key) }
    }

    /// Remembers that the file with this status is not a database.
    static func rememberNotDatabase(_ status: stat) {
        let key = identity(status)
        notDatabases[Int(key >> 58)].keys.withLock {
            if $0.count >= notDatabasesLimit / 64 { $0.removeAll() }
            $0.insert(key)
        }
    }

    /// Whether `name` is SQLite's `-wal`, `-shm` or `-journal` file of some database.
    static func isCompanionName(_ name: UnsafePointer<CChar>) -> Bool {
        ["-wal", "-shm", "-journal"].contains { hasSuffix(name, $0) }
    }

    /// Whether `name` is a rollback journal's name (`NAME-journal`).
    static func isJournalName(_ name: UnsafePointer<CChar>) -> Bool { hasSuffix(name, "-journal") }

    /// Whether `name` is longer than `suffix` and ends with it.
    private static func hasSuffix(_ name: UnsafePointer<CChar>, _ suffix: String) -> Bool {
        let length = strlen(name), count = suffix.utf8.count
        return length > count && strcmp(name + (length - count), suffix) == 0
    }

    /// Whether `name` (raw bytes) is an empty `-wal` or `-shm` that stands for none.
    static func isPlaceholder(_ name: [UInt8], _ status: stat) -> Bool {
        status.st_mode & S_IFMT == S_IFREG && status.st_size == 0 && suffixes.contains { name.count > $0.utf8.count && name.suffix($0.utf8.count).elementsEqual($0.utf8) }
    }

    /// A cheap first look: a database is whole pages of at least 512 bytes.
    static func mayBeDatabase(_ status: stat) -> Bool {
        status.st_size >= 512 && status.st_size % 512 == 0
    }

    /// Whether the file open at `fd` starts with a SQLite header in WAL mode.
    static func isWALDatabase(_ fd: Int32) -> Bool { databaseKind(fd) == .wal }

    enum Kind { case none, rollback, wal }

    /// What the file open at `fd` is: a SQLite database in rollback or WAL mode, or neither.
    static func databaseKind(_ fd: Int32) -> Kind {
        var header = [UInt8](repeating: 0, count: 20)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, 20, 0) }
        guard n == 20, header[0..<16].elementsEqual("SQLite format 3\0".utf8) else { return .none }
        return header[18] == 2 && header[19] == 2 ? .wal : .rollback
    }

    /// Notes the file `name` that a walk just placed in `directory`'s copy if it may be a
    /// database: not a companion, of a database's size, and not known as none (see
    /// ``notDatabases``). `status` is the live file's as it was placed, `source` the live
    /// file open, or -1 (then it is opened by name in `directory.source` when its header
    /// must be read). A walk notes every file it places, so a snapshot built file by file
    /// needs no second walk to find its databases.
    static func note(_ name: UnsafePointer<CChar>, status: stat, source: Int32, in directory: CloneDirectory, noAccessTime: Int32) {
        guard mayBeDatabase(status), !isCompanionName(name) else { return }
        if knownNotDatabase(status) { return }
        let fd = source >= 0 ? source : snapfs_openat(directory.source, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | noAccessTime, 0)
        defer { if source < 0 && fd >= 0 { close(fd) } }
        // Unreadable here: the copy is looked at when the directory completes.
        if fd >= 0 && databaseKind(fd) == .none { return rememberNotDatabase(status) }
        directory.databases.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
    }

    /// Completes a directory's copy for SQLite once its entries are made (its target is
    /// open): plays its hot journals back (see ``HotJournal``) and seals the others; then
    /// every database noted in it, or whose journal was there, is sealed if its copy has no
    /// other name, and a WAL-mode one gets its missing companions. `sealLater` takes a
    /// database whose copy has other names now (a background build's stash), to be sealed
    /// once they are gone; without it such a copy stays unsealed, as a file that other names
    /// share must.
    static func complete(_ directory: CloneDirectory, sealLater: ((UnsafePointer<CChar>) -> Void)? = nil) throws(Errno) {
        let suffix = "-journal".utf8.count
        var candidates = directory.databases
        for journal in directory.journals { candidates.append(Array(journal.dropLast(suffix + 1)) + [0]) }
        for journal in directory.journals where try !HotJournal.rollBack(in: directory.target, journal: journal) {
            let fd = snapfs_openat(directory.target, journal, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var status = stat()
            if fstat(fd, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && status.st_nlink == 1 { try Seal.apply(fd) }
        }
        directory.journals.removeAll()
        directory.databases.removeAll()
        guard !candidates.isEmpty else { return }
        var seen = Set<[CChar]>()
        var walDatabases: [[CChar]] = []
        for name in candidates where seen.insert(name).inserted {
            let fd = snapfs_openat(directory.target, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var status = stat()
            guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            let kind = databaseKind(fd)
            if kind == .none { continue }
            if kind == .wal { walDatabases.append(name) }
            // With its journal mode set to OFF, a connection could write a database without
            // any companion file: so the snapshot's own copy is sealed too.
            if status.st_nlink == 1 {
                try Seal.apply(fd)
            } else if let sealLater {
                name.withUnsafeBufferPointer { sealLater($0.baseAddress!) }
            }
        }
        try addMissing(in: directory.target, databases: walDatabases, seal: true)
    }

    /// Adds an empty `-wal` and `-shm` beside each of `databases` (NUL-terminated names in
    /// `dir`) that lacks them; returns whether it added any.
    @discardableResult
    static func addMissing(in dir: Int32, databases: [[CChar]], seal: Bool = true) throws(Errno) -> Bool {
        var added = false
        for database in databases {
            var status = stat()
            guard fstatat(dir, database, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            for suffix in suffixes {
                let name = Array(database.dropLast()) + suffix.utf8CString
                var existing = stat()
                if fstatat(dir, name, &existing, AT_SYMLINK_NOFOLLOW) == 0 { continue }
                let fd = snapfs_openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd < 0 {
                    if errno == EEXIST { continue }
                    throw .current
                }
                defer { close(fd) }
                added = true
                try syscall(fchown(fd, status.st_uid, status.st_gid))
                try syscall(fchmod(fd, status.st_mode & 0o666))
                var times = [status.st_atim, status.st_mtim]
                try syscall(futimens(fd, &times))
                if seal { try Seal.apply(fd) }
            }
        }
        return added
    }

    /// Gives every WAL database of the tree at `root` its missing companions, keeping each
    /// directory's times: for a btrfs snapshot, which is taken whole by the filesystem and
    /// so is not listed file by file as the other strategies' are. Walks with a cursor (one
    /// descriptor, no recursion); opens only files whose size could be a database's. Also
    /// for a store made by an earlier version (``StoreMigration``), which seals afterwards.
    static func addToTree(_ root: Int32, noAccessTime: Int32) throws(Errno) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        // O_NOATIME: listing the snapshot must not change its directories' access times.
        try DirectoryCursor(at: root, extraFlags: noAccessTime).walk { (cursor) throws(Errno) in
            try visit(cursor, buffer, noAccessTime)
        }
    }

    /// Adds the companions in the directory at `cursor`; returns its subdirectories.
    private static func visit(_ cursor: DirectoryCursor, _ buffer: UnsafeMutableRawBufferPointer,
                              _ noAccessTime: Int32) throws(Errno) -> [[UInt8]] {
        var subdirectories: [[UInt8]] = []
        var databases: [[CChar]] = []
        var journals: [[CChar]] = []
        let dir = cursor.fd
        try DirectoryEntries.forEach(in: dir, buffer: buffer) { (name, type) throws(Errno) in
            var kind = type
            var status = stat()
            if kind == DirectoryEntries.Kind.unknown || kind == DirectoryEntries.Kind.regular {
                try syscall(fstatat(dir, name, &status, AT_SYMLINK_NOFOLLOW))
                kind = DirectoryEntries.Kind.of(mode: status.st_mode)
            }
            if kind == DirectoryEntries.Kind.directory {
                subdirectories.append(Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name))))
            } else if kind == DirectoryEntries.Kind.regular && isJournalName(name) {
                journals.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
            } else if kind == DirectoryEntries.Kind.regular && mayBeDatabase(status) {
                if knownNotDatabase(status) { return }
                let fd = snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | noAccessTime, 0)
                if fd >= 0 {
                    defer { close(fd) }
                    let kind = databaseKind(fd)
                    if kind == .none { rememberNotDatabase(status) }
                    if kind == .wal { databases.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))) }
                }
            }
        }
        guard !journals.isEmpty || !databases.isEmpty else { return subdirectories }
        var changed = false
        for journal in journals where try HotJournal.rollBack(in: dir, journal: journal, seal: false) { changed = true }
        if try addMissing(in: dir, databases: databases, seal: false) || changed {
            var times = [cursor.status.st_atim, cursor.status.st_mtim]
            try syscall(futimens(dir, &times))
        }
        return subdirectories
    }
}
