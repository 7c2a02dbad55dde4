/// The exit codes of every command, documented here and nowhere else (the commands' help
/// quotes ``help`` and ``mountHelp``; `MountProblem.exitCode` returns the mount's).
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
    /// The caller may not do this: changing snapshots (snapshot, prune, delete, hold,
    /// release, restore) is for root, the owner of the mount's root directory (sysexits'
    /// EX_NOPERM).
    static let notPermitted: Int32 = 77

    // `snapfs mount`
    static let backingMissing: Int32 = 10
    static let mountpointMissing: Int32 = 11
    static let mountpointNotEmpty: Int32 = 12
    static let alreadyMounted: Int32 = 13
    static let fuseUnavailable: Int32 = 14
    static let overlapping: Int32 = 15
    static let mountFailed: Int32 = 16
    static let writeBackFailed: Int32 = 18
    /// Another snapfs daemon serves the backing directory.
    static let backingInUse: Int32 = 19
    /// The mountpoint is a FUSE mount whose daemon died (ENOTCONN).
    static let deadMount: Int32 = 23

    /// The exit codes as the commands' help shows them.
    static let help = "Exit codes: 0 done; 1 reading or writing files failed; 17 not a snapfs mount; 20 unknown snapshot; 21 path outside the mount or missing in the snapshot; 22 the daemon refused or failed; 64 bad arguments; 77 only root (the owner of the mount's root directory) may do this."

    /// The exit codes of `snapfs mount`.
    static let mountHelp = "Exit codes: 0 mounted; 10 backing directory missing or not a directory; 11 mountpoint missing or not a directory; 12 mountpoint not empty; 13 mountpoint already mounted; 14 /dev/fuse missing or not accessible; 15 mountpoint and backing directory overlap; 16 the mount failed for another reason; 18 (at exit, in the foreground) cached data could not be written back, the files are named in the log; 19 the backing directory is already served by another snapfs daemon; 23 the mountpoint is a dead FUSE mount (its daemon was killed; clear it with fusermount3 -u MOUNTPOINT); 64 bad arguments or mount options (also a --pid-file or --log-file whose directory does not exist)."
}

extension CLIFailure {
    init(_ message: String, code: Int32) {
        self.init(message: message, code: code)
    }

    static func notSnapfsMount(_ path: String) -> CLIFailure {
        CLIFailure("\(path) is not a snapfs mount", code: ExitStatus.notSnapfsMount)
    }
}
