/// The exit codes of the snapshot commands (mount and unmount document their own).
enum ExitStatus {
    static let success: Int32 = 0
    /// Reading or writing files failed (diff, versions, restore).
    static let failed: Int32 = 1
    /// The path is not a snapfs mount (no control file), as for `unmount`.
    static let notSnapfsMount: Int32 = 17
    /// No snapshot has that name.
    static let unknownSnapshot: Int32 = 20
    /// A path is outside the mount, or missing in the snapshot.
    static let badPath: Int32 = 21
    /// The daemon refused the command or failed to carry it out.
    static let daemonFailed: Int32 = 22
    /// Bad arguments.
    static let usage: Int32 = 64

    /// The exit codes as the commands' help shows them.
    static let help = "Exit codes: 0 done; 1 reading or writing files failed; 17 not a snapfs mount; 20 unknown snapshot; 21 path outside the mount or missing in the snapshot; 22 the daemon refused or failed; 64 bad arguments."
}

extension CLIFailure {
    init(_ message: String, code: Int32) {
        self.init(message: message, code: code)
    }

    static func notSnapfsMount(_ path: String) -> CLIFailure {
        CLIFailure("\(path) is not a snapfs mount", code: ExitStatus.notSnapfsMount)
    }
}
