import Synchronization
import SnapFSBacking

/// The write-ahead logs being written through the mount, by backing object: one
/// ``WALTracker`` each, and the database its last commit found it to belong to.
///
/// Lock order: the table, then one tracker's own lock.
public final class WALLogs: Sendable {
    final class TrackerBox: Sendable {
        let tracker = Mutex(WALTracker())
        /// The database the log belongs to, as its last commit found it.
        let database = Mutex<KnownDatabase?>(nil)
        /// The log generation (its salts) for which the database file was last made
        /// current: the kernel's pages of it handed over after that generation began.
        let databaseCurrentFor = Mutex<UInt64?>(nil)
    }

    /// A database file found to be one (a regular file with a valid header) at a commit:
    /// where it was and its backing object. Still one while the same name in the same
    /// directory is the same object.
    public struct KnownDatabase: Sendable {
        public let location: DatabaseLocation
        public let key: BackingKey

        public init(location: DatabaseLocation, key: BackingKey) {
            self.location = location
            self.key = key
        }
    }

    private let trackers = Mutex<[BackingKey: TrackerBox]>([:])
    public init() {}

    private func box(_ key: BackingKey) -> TrackerBox {
        trackers.withLock { table in
            if let box = table[key] { return box }
            let box = TrackerBox()
            table[key] = box
            return box
        }
    }

    /// A write reached the log `key`; returns the commit it completed, with the log's state.
    /// `inOrder`: as the application wrote it (false: written back from the kernel's cache).
    public func walWritten(_ key: BackingKey, offset: Int64, data: UnsafeRawBufferPointer,
                           reader: some PositionalReader, inOrder: Bool) -> (WALCommit, WALTracker)? {
        box(key).tracker.withLock { tracker in
            guard let commit = tracker.noteWrite(offset: offset, data: data, reader: reader, inOrder: inOrder) else { return nil }
            return (commit, tracker)
        }
    }

    public func walTruncated(_ key: BackingKey, to size: Int64) {
        guard let box = trackers.withLock({ $0[key] }) else { return }
        box.tracker.withLock { $0.noteTruncate(to: size) }
    }

    /// Whether the log `key`'s last commit found its database at `location` to be the
    /// backing object `current`.
    public func isKnownDatabase(_ current: BackingKey, ofLog key: BackingKey, at location: DatabaseLocation) -> Bool {
        guard let box = trackers.withLock({ $0[key] }), let known = box.database.withLock({ $0 }) else { return false }
        return known.location.directory === location.directory && known.location.name == location.name && known.key == current
    }

    public func noteDatabase(_ database: KnownDatabase?, ofLog key: BackingKey) {
        box(key).database.withLock { $0 = database }
    }

    /// A log generation, by its header's salts.
    public static func generation(of header: WALHeader) -> UInt64 {
        UInt64(header.salt1) << 32 | UInt64(header.salt2)
    }

    /// Whether the database file of the log `key` was made current since `generation`
    /// began. A log restarts (a new generation) only after a complete checkpoint, and with
    /// `synchronous=OFF` nothing syncs the database before: the checkpoint's pages may
    /// still be in the kernel's cache, while a commit snapshot of the new generation lays
    /// only its own frames over the file.
    public func databaseIsCurrent(ofLog key: BackingKey, generation: UInt64) -> Bool {
        guard let box = trackers.withLock({ $0[key] }) else { return false }
        return box.databaseCurrentFor.withLock { $0 == generation }
    }

    public func noteDatabaseCurrent(ofLog key: BackingKey, generation: UInt64) {
        guard let box = trackers.withLock({ $0[key] }) else { return }
        box.databaseCurrentFor.withLock { $0 = generation }
    }

    public func walRemoved(_ key: BackingKey) {
        _ = trackers.withLock { $0.removeValue(forKey: key) }
    }

    /// The committed state of the log `key`, if snapfs has followed it.
    public func walLog(_ key: BackingKey) -> WALTracker? {
        guard let box = trackers.withLock({ $0[key] }) else { return nil }
        return box.tracker.withLock { $0.committedFrames > 0 ? $0 : nil }
    }

}
