import Glibc
import SnapFSBacking

/// A last-in-first-out pool of jobs served by a fixed number of threads, ending when no job
/// is left and no thread is busy (a busy thread may still push more).
///
/// Last-in-first-out keeps a tree walk depth-first, so the directories that hold descriptors
/// open while their subtrees are in progress stay few (about depth × threads).
final class WorkStack<Job>: @unchecked Sendable {
    // `jobs` and `busy` are guarded by `mutex`; `condition` signals new jobs or the end.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [Job] = []
    private var busy = 0

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

    func push(_ job: Job) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_mutex_unlock(mutex)
        pthread_cond_signal(condition)
    }

    /// Runs `body` on `threads` threads (the calling one among them) and returns when all
    /// jobs are done. Each thread's `body` takes jobs with `next` until it returns nil; a
    /// job counts as done when its thread asks for the next one.
    func run(threads: Int, _ body: @escaping @Sendable (_ next: () -> Job?) -> Void) {
        let loop: @Sendable () -> Void = { [self] in
            var holding = false
            body {
                if holding { finished() }
                let job = next()
                holding = job != nil
                return job
            }
        }
        var started: [pthread_t] = []
        for _ in 1..<max(threads, 1) {
            // A thread that cannot be made leaves its share to the others.
            if let thread = ThreadBody.spawn(loop) { started.append(thread) }
        }
        loop()
        for thread in started { pthread_join(thread, nil) }
    }

    private func next() -> Job? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while jobs.isEmpty {
            if busy == 0 {
                pthread_cond_broadcast(condition)
                return nil
            }
            pthread_cond_wait(condition, mutex)
        }
        busy += 1
        return jobs.removeLast()
    }

    private func finished() {
        pthread_mutex_lock(mutex)
        busy -= 1
        let done = busy == 0 && jobs.isEmpty
        pthread_mutex_unlock(mutex)
        if done { pthread_cond_broadcast(condition) }
    }
}

