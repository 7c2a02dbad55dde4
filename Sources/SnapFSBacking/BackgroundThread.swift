import Glibc

/// Starts detached threads for the daemon's background work (cache flusher, snapshot
/// timer, SQLite interval). They are created with every signal blocked, so SIGINT/SIGTERM
/// reach only the thread that waits for them, whenever the thread was started.
package enum BackgroundThread {
    package static func start(_ body: @escaping @Sendable () -> Void) {
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_BLOCK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        if let thread = ThreadBody.spawn({
            CallerIdentity.background()
            body()
        }) { pthread_detach(thread) }
    }

    /// Sleeps the whole time, whatever interrupts.
    package static func sleep(milliseconds: Int64) {
        var pause = timespec(tv_sec: Int(milliseconds / 1000), tv_nsec: Int(milliseconds % 1000) * 1_000_000)
        var left = timespec()
        while nanosleep(&pause, &left) != 0 && errno == EINTR { pause = left }
    }
}

/// Carries a closure through `pthread_create`'s context pointer.
package final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    /// A new (joinable) thread running `body`; nil if none could be made.
    package static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
        let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { argument in
            Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box)
        guard created == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            return nil
        }
        return thread
    }
}
