import Glibc

/// One background tree build at a time, taken by one thread and given back by another (the
/// build's own thread when the trigger did not wait), which a mutex does not allow.
final class BuildSlot: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var taken = false

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

    /// Waits until the slot is free, then takes it.
    func acquire() {
        pthread_mutex_lock(mutex)
        while taken { pthread_cond_wait(condition, mutex) }
        taken = true
        pthread_mutex_unlock(mutex)
    }

    func release() {
        pthread_mutex_lock(mutex)
        taken = false
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }
}
