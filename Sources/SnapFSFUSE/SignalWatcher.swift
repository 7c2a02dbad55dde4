import CFUSE
import CLinux
import Glibc
import SnapFSBacking
import SnapFSCore
import Synchronization

/// Takes SIGINT/SIGTERM/SIGHUP on a thread of its own (they are blocked everywhere else)
/// and shuts the session down without losing anything: it pushes the kernel's dirty
/// pages to the daemon while the workers still serve the write-back that causes, marks the session as exited, and
/// sends one request through the mount so that a worker wakes up, sees the mark and ends
/// the loop (libfuse then cancels the other workers).
final class SignalWatcher: @unchecked Sendable {
    private let session: OpaquePointer
    private let channel: FUSEChannel
    private let mountpoint: String
    private var signals: sigset_t
    private let receivedSignal = Atomic<Int32>(0)
    /// Makes the kernel hand over the dirty pages it holds and waits for them.
    private let pushDirtyPages: @Sendable () -> Void

    init(session: OpaquePointer, channel: FUSEChannel, mountpoint: String, signals: sigset_t,
         pushDirtyPages: @escaping @Sendable () -> Void) {
        self.session = session
        self.channel = channel
        self.mountpoint = mountpoint
        self.signals = signals
        self.pushDirtyPages = pushDirtyPages
    }

    var received: Int32? {
        let signal = receivedSignal.load(ordering: .acquiring)
        return signal == 0 ? nil : signal
    }

    func start() {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let created = pthread_create(&thread, nil, { context in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(context!).takeRetainedValue()
            watcher.watch()
            return nil
        }, context)
        if created == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<SignalWatcher>.fromOpaque(context).release()
        }
    }

    private func watch() {
        var signal: Int32 = 0
        while sigwait(&signals, &signal) != 0 {}
        receivedSignal.store(signal, ordering: .releasing)
        let root = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if root >= 0 {
            _ = snapfs_syncfs(root)
        }
        // syncfs starts the kernel's write-back but (Linux 6.18) does not wait for it on
        // FUSE; this does, file by file.
        pushDirtyPages()
        fuse_session_exit(session)
        channel.wakeReaders()
        if root >= 0, channel.ring == nil {
            // Any request wakes a worker; an xattr read is never answered from the kernel's caches.
            // (With io_uring it would go to a ring, which may be gone before it is answered,
            // leaving this thread in the kernel and the process unable to exit.)
            var byte: UInt8 = 0
            _ = fgetxattr(root, "user.snapfs.wake", &byte, 0)
        }
        if root >= 0 { close(root) }
    }
}

/// Runs a libfuse call while catching what it prints on stderr, so the CLI can report it
/// as its own one-line error.
enum StandardErrorCapture {
    static func run<T>(_ body: () -> T) -> (T, String) {
        var pipeFDs: [Int32] = [0, 0]
        let saved = dup(2)
        guard saved >= 0, pipe(&pipeFDs) == 0 else {
            if saved >= 0 { close(saved) }
            return (body(), "")
        }
        for fd in pipeFDs {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        dup2(pipeFDs[1], 2)
        close(pipeFDs[1])
        let result = body()
        dup2(saved, 2)
        close(saved)
        let bytes = readToEnd(pipeFDs[0])
        close(pipeFDs[0])
        let text = String(decoding: bytes, as: UTF8.self)
            .split(separator: "\n").map { $0.hasPrefix("fuse: ") ? $0.dropFirst(6) : $0 }.joined(separator: "; ")
        return (result, text)
    }
}
