import CLinux
import Glibc
import Logging
import SnapFSBacking
import Synchronization
import SystemPackage

/// Makes published snapshots durable in batches, off the path of the request that took them.
///
/// A snapshot is published (renamed into `.snapshots`) without any sync: at a SQLite commit
/// an fsync per snapshot would cost more than the commit. Its pages (copied blocks, WAL
/// frames laid over a clone, its metadata) sit in the backing filesystem's page cache. A
/// thread of its own waits until the oldest snapshot not yet durable is `delayMs` old (or
/// `batchLimit` of them wait), runs one `syncfs` of the backing filesystem, then writes the
/// ``DurabilityMarker`` naming the newest snapshot published before that `syncfs` started.
/// Snapshots are published in name order (under the engine's serial lock), so that name
/// covers every snapshot published before it, and none whose data the `syncfs` may have
/// missed.
final class SnapshotDurability: @unchecked Sendable {
    /// Pending snapshots that start a sync before the delay is over.
    static let batchLimit = 1000

    private let syncFD: Int32
    private let catalog: SnapshotCatalog
    let delayMs: Int64
    private let logger: Logger
    /// The marker's name when the engine started (after recovery): names given later must
    /// sort after it, even if the clock stepped back.
    let floor: SnapshotName?

    // Guarded by `mutex`; `condition` signals a publication or a finished sync.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The newest snapshot published.
    private var published: SnapshotName?
    /// Snapshots published and not yet covered by a finished sync.
    private var pending = 0
    /// When the oldest pending snapshot was published (monotonic ms).
    private var pendingSince: Int64 = 0
    /// The newest snapshot known durable (what the marker says).
    private var durable: SnapshotName?
    private var threadStarted = false
    /// One sync (syncfs, then the marker) at a time, so the marker only moves forward.
    private let syncing = Mutex<Void>(())

    /// `syncFD`: a descriptor on the backing filesystem (not owned). `durable`: what the
    /// marker says now.
    init(syncFD: Int32, catalog: SnapshotCatalog, durable: SnapshotName?, delayMs: Int64, logger: Logger) {
        self.syncFD = syncFD
        self.catalog = catalog
        self.durable = durable
        self.delayMs = max(0, delayMs)
        self.logger = logger
        floor = durable
        published = durable
        pthread_mutex_init(mutex, nil)
        MonotonicClock.initialize(condition)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Notes that `name` was just published (on the hot path: no I/O), and starts the
    /// thread at the first publication.
    func published(_ name: SnapshotName) {
        let start = locked { () -> Bool in
            if published.map({ name > $0 }) ?? true { published = name }
            if pending == 0 { pendingSince = SnapshotEngine.monotonicMs() }
            pending += 1
            if pending == 1 || pending >= Self.batchLimit { pthread_cond_broadcast(condition) }
            defer { threadStarted = true }
            return !threadStarted
        }
        if start { BackgroundThread.start { self.run() } }
    }

    /// Whether the snapshot `name` is durable.
    func covers(_ name: SnapshotName) -> Bool {
        locked { durable.map { name <= $0 } ?? false }
    }

    /// The newest snapshot known durable.
    var durableThrough: SnapshotName? { locked { durable } }

    /// Makes every snapshot published so far durable: one `syncfs`, then the marker.
    /// Returns at once if they are already.
    func sync() throws(Errno) {
        try syncing.withLock { (_: inout Void) throws(Errno) in
            let (target, count) = locked { (published, pending) }
            guard count > 0, let target else { return }
            // Everything published up to `target` is in the page cache or on the disk.
            try syscallRetrying { snapfs_syncfs(syncFD) }
            let metadataFD = snapfs_openat(catalog.directoryFD, SnapshotCatalog.metadataDirectoryName,
                                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            guard metadataFD >= 0 else { throw Errno.current }
            defer { close(metadataFD) }
            try DurabilityMarker.write(target, metadataFD: metadataFD)
            locked {
                if durable.map({ target > $0 }) ?? true { durable = target }
                pending -= count
                pthread_cond_broadcast(condition)
            }
        }
    }

    /// Makes the snapshot `name` (already published) durable, syncing now if it is not yet.
    func makeDurable(_ name: SnapshotName) throws(Errno) {
        if covers(name) { return }
        try sync()
    }

    /// The durability thread: a sync per batch.
    private func run() {
        var failing = false
        while true {
            locked {
                while pending == 0 { pthread_cond_wait(condition, mutex) }
                // Let the batch fill: until the oldest pending snapshot is `delayMs` old.
                while pending > 0 && pending < Self.batchLimit {
                    let left = pendingSince + delayMs - SnapshotEngine.monotonicMs()
                    if left <= 0 { break }
                    var deadline = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &deadline)
                    let nanoseconds = Int64(deadline.tv_nsec) + (left % 1000) * 1_000_000
                    deadline.tv_sec += Int(left / 1000 + nanoseconds / 1_000_000_000)
                    deadline.tv_nsec = Int(nanoseconds % 1_000_000_000)
                    pthread_cond_timedwait(condition, mutex, &deadline)
                }
            }
            do throws(Errno) {
                try sync()
                if failing { logger.notice("snapshots are made durable again (through \(durableThrough?.description ?? "-"))") }
                failing = false
            } catch {
                // Said once until it works again; the snapshots stay listed as not durable.
                if !failing { logger.error("cannot make the newest snapshots durable (syncfs or the marker): \(error); retrying") }
                failing = true
                BackgroundThread.sleep(milliseconds: max(1000, delayMs))
            }
        }
    }

    // MARK: at mount

    /// Settles what a previous run left, before the engine publishes anything: returns the
    /// newest durable snapshot. After an unclean shutdown, the snapshots newer than the
    /// marker may be incomplete: they are removed. A store without a marker (made by an
    /// earlier snapfs) keeps its snapshots: they count as durable, and the marker is written.
    /// `notes`: what to log once the log goes where it should (after the mount is ready).
    static func recover(_ catalog: SnapshotCatalog, notes: inout [String]) throws(SnapshotFailure) -> SnapshotName? {
        let metadataFD = snapfs_openat(catalog.directoryFD, SnapshotCatalog.metadataDirectoryName,
                                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard metadataFD >= 0 else {
            throw SnapshotFailure(Errno.current, "cannot open \(ReservedName.snapshots)/\(SnapshotCatalog.metadataDirectoryName)")
        }
        defer { close(metadataFD) }
        let entries: [SnapshotEntry]
        do throws(Errno) { entries = try catalog.list() } catch { throw SnapshotFailure(error, "cannot list \(ReservedName.snapshots)") }
        let reading = DurabilityMarker.read(metadataFD: metadataFD)
        guard case let .through(marker) = reading else {
            if !entries.isEmpty {
                notes.append(reading == .absent
                    ? "no durability marker in \(ReservedName.snapshots) (a store made by an earlier snapfs): its \(entries.count) snapshots are taken as durable"
                    : "the durability marker in \(ReservedName.snapshots) is unreadable: its \(entries.count) snapshots are taken as durable")
            }
            let newest = entries.last?.name
            do throws(Errno) {
                // Whatever of them is still in the page cache reaches the disk first.
                try syscallRetrying { snapfs_syncfs(catalog.directoryFD) }
                try DurabilityMarker.write(newest, metadataFD: metadataFD)
            } catch {
                throw SnapshotFailure(error, "cannot write the durability marker in \(ReservedName.snapshots): \(error)")
            }
            return newest
        }
        let lost = entries.filter { !reading.covers($0.name) }
        if !lost.isEmpty {
            let names = lost.count <= 10 ? lost.map(\.name.description).joined(separator: ", ")
                : "\(lost[0].name) … \(lost[lost.count - 1].name)"
            notes.append("removing \(lost.count) snapshot(s) that were not durable when snapfs stopped without unmounting (newest durable: \(marker?.description ?? "none")); they may be incomplete: \(names)")
        }
        for entry in lost {
            let name = entry.name.description
            // Out of the list at once (a rename), then removed as a half-built one would be.
            do throws(Errno) {
                let hidden = try catalog.hide(name)
                unlinkat(metadataFD, SnapshotMetadata.fileName(for: name), 0)
                try TreeRemover.remove(parent: catalog.directoryFD, name: hidden)
            } catch {
                throw SnapshotFailure(error, "cannot remove the snapshot \(name), which was not durable: \(error)")
            }
        }
        return marker
    }
}
