import Glibc
import SnapFSBacking

/// Running `snapfs mount` in the background: the command re-executes itself with
/// `--foreground --ready-fd 3` in a new session and waits on a pipe until the child
/// reports that the mount is ready (or why it failed), so the command returns only
/// when the mount can be used.
public enum Daemon {
    static func spawnAndWait(_ request: MountRequest) throws(CommandFailure) {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            throw CommandFailure("cannot create a pipe: \(String(cString: strerror(errno)))", code: ExitStatus.mountFailed)
        }
        // Only the child's copy (dup'ed to fd 3) may stay open across exec.
        _ = fcntl(pipeFDs[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipeFDs[1], F_SETFD, FD_CLOEXEC)
        var arguments = ["snapfs", "mount", request.backing, request.mountpoint, "--foreground", "--ready-fd", "3"]
        for option in request.options { arguments += ["-o", option] }
        if request.debug { arguments.append("--debug") }
        if let pidFile = request.pidFile { arguments += ["--pid-file", absolutePath(pidFile)] }
        if let logFile = request.logFile { arguments += ["--log-file", absolutePath(logFile)] }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 3)

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { $0.withCString { strdup($0) } } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nil, argv, environ)
        close(pipeFDs[1])
        guard spawned == 0 else {
            throw CommandFailure("cannot start the daemon: \(String(cString: strerror(spawned)))", code: ExitStatus.mountFailed)
        }
        let message = String(decoding: readToEnd(pipeFDs[0]), as: UTF8.self)
        close(pipeFDs[0])
        if message == "0\n" { return }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let parts = message.split(separator: "\t", maxSplits: 1)
        if parts.count == 2, let code = Int32(parts[0]) {
            throw CommandFailure(String(parts[1].dropLast()), code: code)
        }
        throw CommandFailure("the daemon exited before the mount was ready (status \(status))", code: ExitStatus.mountFailed)
    }

    /// Start-up of the serving process: descriptors for many inodes, and no umask of its
    /// own (the kernel has already applied the caller's).
    static func prepareProcess() {
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            var wanted = limit
            if geteuid() == 0, let maximum = readNumber("/proc/sys/fs/nr_open") { wanted.rlim_max = max(limit.rlim_max, maximum) }
            wanted.rlim_cur = wanted.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &wanted) != 0 {
                limit.rlim_cur = limit.rlim_max
                _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            }
        }
        // Capabilities are per thread: taken out here, before any thread starts.
        CallerIdentity.start()
        umask(0)
        signal(SIGPIPE, SIG_IGN)
    }

    /// After the mount is ready, a daemon lets go of the terminal: stdout goes to
    /// /dev/null and stderr to the log file (or /dev/null).
    static func detachOutput(logFile: String?) {
        let null = open("/dev/null", O_RDWR)
        if null >= 0 {
            dup2(null, 0)
            dup2(null, 1)
        }
        let log = logFile.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? -1
        dup2(log >= 0 ? log : null, 2)
        if log >= 0 { close(log) }
        if null > 2 { close(null) }
        _ = chdir("/")
    }

    /// In the foreground with --log-file: once the mount is ready, the log goes to the file.
    static func redirectStandardError(to logFile: String) {
        let log = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard log >= 0 else {
            FileHandleStandardError.write("snapfs: cannot open log file \(logFile): \(String(cString: strerror(errno))); logging to stderr\n")
            return
        }
        dup2(log, 2)
        close(log)
    }

    /// Why a file the daemon will create at `path` (pid or log file) cannot be, checked
    /// before mounting: its directory must exist and be a directory; nil when it can.
    public static func unwritableFileProblem(_ path: String) -> String? {
        let absolutePath = absolutePath(path)
        let directory = absolutePath.split(separator: "/", omittingEmptySubsequences: false).dropLast()
            .joined(separator: "/")
        var st = stat()
        if stat(directory.isEmpty ? "/" : directory, &st) != 0 {
            return "cannot use directory \(directory.isEmpty ? "/" : directory): \(String(cString: strerror(errno)))"
        }
        if st.st_mode & S_IFMT != S_IFDIR { return "\(directory) is not a directory" }
        if access(directory.isEmpty ? "/" : directory, W_OK) != 0 && access(absolutePath, W_OK) != 0 {
            return "cannot write in \(directory): \(String(cString: strerror(errno)))"
        }
        if stat(absolutePath, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR { return "is a directory" }
        return nil
    }

    static func send(_ text: String, to fd: Int32) {
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
    }

    static func readNumber(_ path: String) -> UInt? {
        readWholeFile(path).flatMap { UInt(String(decoding: $0, as: UTF8.self).trimmingNewline) }
    }
}

extension String {
    var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
