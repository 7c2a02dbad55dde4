import Glibc

/// A background thread that sleeps until it is woken, then runs its body once for all the
/// wake-ups since it last ran. Started at the first wake-up.
package final class WakeableThread: @unchecked Sendable {
    // `pending`, `started` and `body` are guarded by `mutex`; `condition` signals a wake-up.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var pending = false
    private var started = false
    private var body: (@Sendable () -> Void)?

    package init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    /// What the thread runs (set once its owner exists; wake-ups before do nothing).
    package func attach(_ body: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mutex)
        self.body = body
        pthread_mutex_unlock(mutex)
    }

    /// Runs the body soon on the thread (once, however often this is called meanwhile).
    package func wake() {
        pthread_mutex_lock(mutex)
        pending = true
        let start = !started
        started = true
        pthread_mutex_unlock(mutex)
        if start {
            BackgroundThread.start { [self] in loop() }
        } else {
            pthread_cond_signal(condition)
        }
    }

    private func loop() {
        while true {
            pthread_mutex_lock(mutex)
            while !pending { pthread_cond_wait(condition, mutex) }
            pending = false
            let body = self.body
            pthread_mutex_unlock(mutex)
            body?()
        }
    }
}
