import Glibc

/// A mutex with one condition variable, for state that threads wait on (a queue of jobs,
/// a build slot, the states of a capture). The condition is waited on with the mutex held.
final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a signal or broadcast; the mutex must be held.
    @inline(__always) func wait() { pthread_cond_wait(condition, mutex) }
    @inline(__always) func signal() { pthread_cond_signal(condition) }
    @inline(__always) func broadcast() { pthread_cond_broadcast(condition) }
}
