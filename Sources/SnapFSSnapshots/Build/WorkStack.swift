import Glibc
import SnapFSBacking

/// A last-in-first-out pool of jobs served by a fixed number of threads, ending when no job
/// is left and no thread is busy (a busy thread may still push more).
///
/// Last-in-first-out keeps a tree walk depth-first, so the directories that hold descriptors
/// open while their subtrees are in progress stay few (about depth × threads).
final class WorkStack<Job>: @unchecked Sendable {
    // `jobs` and `busy` are guarded by `monitor`, which signals new jobs or the end.
    private let monitor = Monitor()
    private var jobs: [Job] = []
    private var busy = 0

    init() {}

    func push(_ job: Job) {
        monitor.lock()
        jobs.append(job)
        monitor.unlock()
        monitor.signal()
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
        monitor.lock()
        defer { monitor.unlock() }
        while jobs.isEmpty {
            if busy == 0 {
                monitor.broadcast()
                return nil
            }
            monitor.wait()
        }
        busy += 1
        return jobs.removeLast()
    }

    private func finished() {
        monitor.lock()
        busy -= 1
        let done = busy == 0 && jobs.isEmpty
        monitor.unlock()
        if done { monitor.broadcast() }
    }
}

