import Glibc

/// Holds changes back while a snapshot is taken, as fsfreeze does: every mutating operation
/// passes the gate shared, a snapshot closes it exclusively. Readers never touch it.
///
/// Writer-preferring, so a stream of writes cannot starve a snapshot; therefore never
/// enter it shared twice on one thread (a waiting snapshot would block the second entry).
/// Lock order: the gate before any inode or table lock.
public final class FreezeGate: @unchecked Sendable {
    @usableFromInline let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    /// Runs one change; waits while a snapshot is being taken.
    @inlinable @inline(__always)
    public func pass<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` once every change in progress has finished, holding new ones back until it returns.
    public func frozen<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
