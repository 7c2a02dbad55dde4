import SnapFSBacking
import Synchronization
import SnapFSSQLite

/// What commit detection needs to know about the filesystem's own nodes, kept here so that
/// the SQLite wing deals in bytes and backing keys only: the paths of the directories that
/// hold databases (worked out once, forgotten when names move), the journals the kernel
/// writes directly (see `SnapFileSystem+JournalPassthrough`), and the logs it caches.
final class SQLiteNodes: Sendable {
    /// Moves on at every rename and rmdir: a directory path worked out before may have moved.
    let namesGeneration = Atomic<UInt64>(0)

    /// A directory's path relative to the root, as worked out while the names were at
    /// `generation`. Holds the directory weakly (an inode the kernel forgot goes).
    final class DirectoryPath: Sendable {
        weak let directory: Inode?
        let generation: UInt64
        let path: String

        init(_ directory: Inode, generation: UInt64, path: String) {
            self.directory = directory
            self.generation = generation
            self.path = path
        }
    }

    private let directoryPaths = Mutex<[UInt64: DirectoryPath]>([:])
    static let directoryPathLimit = 1024

    /// The path of `directory` relative to the root, as last worked out (nil: work it out).
    func directoryPath(of directory: Inode) -> String? {
        let generation = namesGeneration.load(ordering: .acquiring)
        return directoryPaths.withLock { table in
            guard let entry = table[directory.id], entry.directory === directory, entry.generation == generation else { return nil }
            return entry.path
        }
    }

    /// Remembers the path of `directory`, worked out while the generation was `generation`.
    func noteDirectoryPath(_ path: String, of directory: Inode, generation: UInt64) {
        directoryPaths.withLock { table in
            if table.count >= Self.directoryPathLimit { table.removeAll(keepingCapacity: true) }
            table[directory.id] = DirectoryPath(directory, generation: generation, path: path)
        }
    }

    /// A rename or rmdir happened: paths worked out before may be wrong.
    func namesChanged() {
        namesGeneration.add(1, ordering: .releasing)
    }

    // MARK: journals the kernel writes

    /// An open journal the kernel writes directly, as its database's writes find it.
    final class JournalLink: Sendable {
        weak let file: OpenFile?
        init(_ file: OpenFile) { self.file = file }
    }

    /// Database node id → its open journal that the kernel writes.
    private let kernelWrittenJournals = Mutex<[UInt64: JournalLink]>([:])
    private let anyKernelWrittenJournal = Atomic<Bool>(false)

    func linkJournal(_ journal: OpenFile, toDatabase database: UInt64) {
        kernelWrittenJournals.withLock { $0[database] = JournalLink(journal) }
        anyKernelWrittenJournal.store(true, ordering: .releasing)
    }

    /// The open journal of the database `database` that the kernel writes, if any.
    @inline(__always)
    func kernelWrittenJournal(ofDatabase database: UInt64) -> OpenFile? {
        guard anyKernelWrittenJournal.load(ordering: .acquiring) else { return nil }
        return kernelWrittenJournals.withLock { table in
            guard let link = table[database] else { return nil }
            if let file = link.file { return file }
            table[database] = nil
            if table.isEmpty { anyKernelWrittenJournal.store(false, ordering: .releasing) }
            return nil
        }
    }
    // MARK: logs the kernel caches (see `SnapFileSystem+CachedLogs`)

    /// Log node id → the log and its database.
    let cachedLogs = Mutex<[UInt64: CachedLog]>([:])
    let anyCachedLog = Atomic<Bool>(false)
    /// Pulls the cached logs' pages once per interval of the commit policy.
    let logPuller = DeadlineThread()
}

/// Commit detection knows a database's directory by its node id.
extension Inode: DatabaseDirectory {
    public var nodeID: UInt64 { id }
}

extension DatabaseLocation {
    /// The directory's inode: every location is made by the filesystem from one.
    var directoryInode: Inode { directory as! Inode }
}
