import CLinux
import Glibc
import Synchronization
import SystemPackage

/// A program run to its end with an explicit environment, its standard input `/dev/null`,
/// its standard output and error captured (bounded), optionally in a directory given by a
/// descriptor (`fchdir` in the child, so no name is looked up again).
///
/// The child gets no other descriptor of the caller's (a daemon's `/dev/fuse` held by a
/// child would keep the mount alive after the daemon), except one the caller passes on
/// as descriptor 3. Built on `posix_spawnp`: nothing of snapfs runs in the child between
/// fork and exec.
public struct ChildProcess: Sendable {
    /// The outcome of a run.
    public struct Outcome: Sendable {
        /// The exit status, or 128 + the signal that ended it.
        public var status: Int32
        /// Standard output: the whole of it up to ``outputLimit`` (more is an error), or with
        /// `lastLineOnly` only its last complete line.
        public var output: [UInt8]
        /// The last ``errorLimit`` bytes of standard error.
        public var errorOutput: [UInt8]
        /// The output was larger than the limit and was cut.
        public var outputTruncated: Bool
        /// It ran past ``ChildProcess/timeoutMs`` and was killed.
        public var timedOut = false

        public var errorText: String { String(decoding: errorOutput, as: UTF8.self) }
    }

    /// The most standard output kept (a listing of many restic snapshots is a few MiB).
    public static let outputLimit = 64 << 20
    /// The most standard error kept: its end, where the reason of a failure is.
    public static let errorLimit = 64 << 10

    /// argv[0] is looked up on `PATH` (the caller's).
    public var arguments: [String]
    /// `NAME=value` strings, the child's whole environment.
    public var environment: [String]
    /// The child's working directory, or nil for the caller's.
    public var directoryFD: Int32?
    /// Keep only the last complete line of standard output (a stream of JSON progress lines
    /// ending in a summary).
    public var lastLineOnly = false
    /// A descriptor the child gets as its descriptor 3 (a lock it holds too), or nil.
    public var inheritedFD: Int32?
    /// How long the program may run, or nil: past it, the child and everything it started
    /// (it runs in a process group of its own) get SIGKILL, and ``Outcome/timedOut`` is set.
    public var timeoutMs: Int?

    public init(arguments: [String], environment: [String], directoryFD: Int32? = nil, lastLineOnly: Bool = false,
                inheritedFD: Int32? = nil) {
        self.arguments = arguments
        self.environment = environment
        self.directoryFD = directoryFD
        self.lastLineOnly = lastLineOnly
        self.inheritedFD = inheritedFD
    }

    /// The calling process's environment, by name.
    public static func callerEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }

    /// Starts the program, calls `running` with its pid (so that a caller can signal it),
    /// reads its output until it exits, reaps it and calls `running` with nil. Throws when it
    /// cannot be started (ENOENT: the program is not on PATH).
    public func run(running: (pid_t?) -> Void = { _ in }) throws(Errno) -> Outcome {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        try syscall(snapfs_pipe2(&outPipe, O_CLOEXEC))
        if snapfs_pipe2(&errPipe, O_CLOEXEC) != 0 {
            let error = Errno.current
            close(outPipe[0]); close(outPipe[1])
            throw error
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        if let directoryFD { _ = snapfs_spawn_add_fchdir(&actions, directoryFD) }
        // dup2 onto 3 clears close-on-exec (also when it is 3 already).
        if let inheritedFD { posix_spawn_file_actions_adddup2(&actions, inheritedFD, 3) }
        _ = snapfs_spawn_add_closefrom(&actions, inheritedFD == nil ? 3 : 4)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with default signal handling and nothing blocked, whatever the
        // caller's threads have blocked (the daemon blocks SIGTERM and friends everywhere).
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if timeoutMs != nil {
            flags |= POSIX_SPAWN_SETPGROUP
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, envp)
        close(outPipe[1])
        close(errPipe[1])
        if spawned != 0 {
            close(outPipe[0])
            close(errPipe[0])
            throw Errno(rawValue: spawned)
        }
        running(pid)
        // The group is killed at the deadline unless the run ends first; its pipes then close
        // too, whatever the program left running.
        let deadline = timeoutMs.map { TimeoutKill(group: pid, afterMs: $0) }
        var outcome = Outcome(status: 0, output: [], errorOutput: [], outputTruncated: false)
        drain(output: outPipe[0], error: errPipe[0], into: &outcome)
        close(outPipe[0])
        close(errPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if let deadline { outcome.timedOut = deadline.cancel() }
        running(nil)
        outcome.status = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return outcome
    }

    /// Reads both pipes until both are closed, keeping what the limits allow.
    private func drain(output: Int32, error: Int32, into outcome: inout Outcome) {
        var fds = [pollfd(fd: output, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: error, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pendingLine: [UInt8] = []
        while fds.contains(where: { $0.fd >= 0 }) {
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    fds[index].fd = -1
                    continue
                }
                let chunk = buffer[0..<n]
                if index == 1 {
                    outcome.errorOutput += chunk
                    if outcome.errorOutput.count > Self.errorLimit {
                        outcome.errorOutput.removeFirst(outcome.errorOutput.count - Self.errorLimit)
                    }
                } else if lastLineOnly {
                    pendingLine += chunk
                    if let end = pendingLine.lastIndex(of: UInt8(ascii: "\n")) {
                        let complete = pendingLine[..<end]
                        let start = complete.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? complete.startIndex
                        outcome.output = Array(complete[start...])
                        pendingLine = Array(pendingLine[(end + 1)...])
                    }
                    if pendingLine.count > Self.outputLimit {
                        pendingLine = []
                        outcome.outputTruncated = true
                    }
                } else if outcome.output.count + n <= Self.outputLimit {
                    outcome.output += chunk
                } else {
                    outcome.outputTruncated = true
                }
            }
        }
        if lastLineOnly && !pendingLine.isEmpty { outcome.output = pendingLine }
    }
}

/// Kills a process group once a time has passed, unless cancelled first (a thread that looks
/// every 20 ms: it runs only while a program with a timeout does).
private final class TimeoutKill: Sendable {
    private static let running = 0, cancelled = 1, fired = 2
    private let state = Atomic<Int>(TimeoutKill.running)

    init(group: pid_t, afterMs: Int) {
        let end = MonotonicClock.microseconds() + Int64(afterMs) * 1000
        BackgroundThread.start { [self] in
            while MonotonicClock.microseconds() < end {
                if state.load(ordering: .acquiring) == Self.cancelled { return }
                BackgroundThread.sleep(milliseconds: 20)
            }
            if state.compareExchange(expected: Self.running, desired: Self.fired, ordering: .acquiringAndReleasing).exchanged {
                kill(-group, SIGKILL)
            }
        }
    }

    /// Stops the timer; returns whether it had fired.
    func cancel() -> Bool {
        !state.compareExchange(expected: Self.running, desired: Self.cancelled, ordering: .acquiringAndReleasing).exchanged
    }
}
