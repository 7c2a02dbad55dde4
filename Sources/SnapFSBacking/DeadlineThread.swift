import Glibc

/// A background thread that runs its body at the earliest deadline asked for (monotonic
/// clock, microseconds), and otherwise sleeps: an idle mount wakes nobody, and a deadline
/// a few milliseconds away is met to the millisecond rather than at the next tick of a
/// fixed period. The body returns the next deadline it needs (nil: none).
package final class DeadlineThread: @unchecked Sendable {
    // `deadline`, `running` and `body` are guarded by `mutex`; `condition` signals an
    // earlier deadline (it waits on CLOCK_MONOTONIC, like the deadlines).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var deadline: Int64 = .max
    private var running = false
    private var body: (@Sendable () -> Int64?)?

    package init() {
        pthread_mutex_init(mutex, nil)
        MonotonicClock.initialize(condition)
    }

    /// Starts the thread with what it runs; deadlines asked for before are kept.
    package func start(_ body: @escaping @Sendable () -> Int64?) {
        pthread_mutex_lock(mutex)
        let start = !running
        self.body = body
        running = true
        pthread_mutex_unlock(mutex)
        if start { BackgroundThread.start { [self] in loop() } }
    }

    /// Runs the body at `us` (monotonic microseconds) at the latest.
    package func schedule(atUs us: Int64) {
        pthread_mutex_lock(mutex)
        if us < deadline {
            deadline = us
            pthread_cond_signal(condition)
        }
        pthread_mutex_unlock(mutex)
    }

    private func loop() {
        pthread_mutex_lock(mutex)
        while true {
            let now = MonotonicClock.microseconds()
            if deadline > now {
                if deadline == .max {
                    pthread_cond_wait(condition, mutex)
                } else {
                    var until = timespec(tv_sec: Int(deadline / 1_000_000), tv_nsec: Int(deadline % 1_000_000) * 1000)
                    pthread_cond_timedwait(condition, mutex, &until)
                }
                continue
            }
            deadline = .max
            let body = self.body
            pthread_mutex_unlock(mutex)
            let next = body?()
            pthread_mutex_lock(mutex)
            if let next, next < deadline { deadline = next }
        }
    }
}
