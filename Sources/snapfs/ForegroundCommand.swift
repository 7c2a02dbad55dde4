import Glibc

/// A command run in the foreground between the two snapshots of a pair (`snapfs snapshot
/// MOUNT --label L -- COMMAND`): as the calling user, with the caller's environment,
/// working directory, standard input, output and error and terminal, in the caller's
/// process group, as a shell would run it.
///
/// While it runs, snapfs ignores SIGINT and SIGQUIT (as `system(3)` does: Ctrl-C on the
/// terminal reaches the command, and snapfs lives on to take the post snapshot) and passes
/// SIGTERM and SIGHUP on to it. The command starts with every signal at its default and
/// none blocked.
struct ForegroundCommand {
    /// How the command ended.
    enum Ending: Equatable {
        /// It exited with this status.
        case exited(Int32)
        /// A signal ended it.
        case killed(signal: Int32)
        /// It could not be started (`errno` of the exec: ENOENT, EACCES, …).
        case notStarted(Int32)

        /// The exit code snapfs passes on, as a shell reports it: the status; 128 + the
        /// signal; 127 for a command not found, 126 for one that cannot be run.
        var exitCode: Int32 {
            switch self {
            case .exited(let status): status
            case .killed(let signal): 128 + signal
            case .notStarted(let error): error == ENOENT ? 127 : 126
            }
        }
    }

    /// argv; argv[0] is looked up on PATH.
    let arguments: [String]

    /// Runs the command to its end.
    func run() -> Ending {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        sigfillset(&all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        // Ignored before the spawn, so that a Ctrl-C at any moment reaches only the command.
        let previousInterrupt = signal(SIGINT, SIG_IGN)
        let previousQuit = signal(SIGQUIT, SIG_IGN)
        let passOn: @convention(c) (Int32) -> Void = { signalNumber in
            let child = ForegroundCommand.child
            if child > 0 { kill(child, signalNumber) }
        }
        let previousTerminate = signal(SIGTERM, passOn)
        let previousHangUp = signal(SIGHUP, passOn)
        defer {
            Self.child = 0
            signal(SIGINT, previousInterrupt)
            signal(SIGQUIT, previousQuit)
            signal(SIGTERM, previousTerminate)
            signal(SIGHUP, previousHangUp)
        }

        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let spawned = posix_spawnp(&pid, arguments[0], nil, &attributes, argv, environ)
        guard spawned == 0 else { return .notStarted(spawned) }
        Self.child = pid
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return .exited(127) }
        }
        if (status & 0x7f) == 0 { return .exited((status >> 8) & 0xff) }
        return .killed(signal: status & 0x7f)
    }

    /// Runs `body` with SIGINT and SIGQUIT ignored: the command and the post snapshot of a
    /// pair, so that a Ctrl-C pressed again while the post snapshot is taken does not leave
    /// snapfs dead with the snapshot's outcome unreported.
    static func ignoringInterrupts<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let previousInterrupt = signal(SIGINT, SIG_IGN)
        let previousQuit = signal(SIGQUIT, SIG_IGN)
        defer {
            signal(SIGINT, previousInterrupt)
            signal(SIGQUIT, previousQuit)
        }
        return try body()
    }

    /// The running command, for the handler that passes SIGTERM and SIGHUP on; 0 when none.
    /// Written before the handlers can see a command and cleared after it ended, by the one
    /// thread of the CLI.
    nonisolated(unsafe) static var child: pid_t = 0

    /// `SIGTERM`, `SIGKILL`, … (`signal 42` for one without a name here).
    static func signalName(_ number: Int32) -> String {
        let names: [Int32: String] = [SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL",
                                      SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL",
                                      SIGSEGV: "SIGSEGV", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
                                      SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ"]
        return names[number] ?? "signal \(number)"
    }
}
