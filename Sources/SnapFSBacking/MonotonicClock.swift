import Glibc

/// CLOCK_MONOTONIC, for durations and deadlines, and condition variables that wait on it
/// (so a change of the wall clock moves no deadline).
package enum MonotonicClock {
    /// Now, in microseconds.
    package static func microseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    /// Initializes `condition` to time its waits on this clock.
    package static func initialize(_ condition: UnsafeMutablePointer<pthread_cond_t>) {
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }
}
