import Glibc

/// The exit codes of every command, documented here and nowhere else (the commands' help
/// quotes ``help`` and ``mountHelp``; `MountProblem.exitCode` returns the mount's).
public enum ExitStatus {
    public static let success: Int32 = 0
    /// Reading or writing files failed (diff, versions, restore).
    public static let failed: Int32 = 1
    /// The path is not a snapfs mount (no control file), as for `unmount`.
    public static let notSnapfsMount: Int32 = 17
    /// No snapshot has that name.
    public static let unknownSnapshot: Int32 = 20
    /// A path is outside the mount, or missing in the snapshot.
    public static let badPath: Int32 = 21
    /// The daemon refused the command or failed to carry it out.
    public static let daemonFailed: Int32 = 22
    /// The restic repository could not be reached, opened or written (wrong location or
    /// password, server down, restic missing): `replicate`, `list --from`, `restore --from`.
    public static let repositoryFailed: Int32 = 24
    /// Bad arguments.
    public static let usage: Int32 = 64
    /// The caller may not do this: changing snapshots (snapshot, prune, delete, hold,
    /// release, restore) is for root, the owner of the mount's root directory (sysexits'
    /// EX_NOPERM).
    public static let notPermitted: Int32 = 77

    // `snapfs mount`
    public static let backingMissing: Int32 = 10
    public static let mountpointMissing: Int32 = 11
    public static let mountpointNotEmpty: Int32 = 12
    public static let alreadyMounted: Int32 = 13
    public static let fuseUnavailable: Int32 = 14
    public static let overlapping: Int32 = 15
    public static let mountFailed: Int32 = 16
    public static let writeBackFailed: Int32 = 18
    /// Another snapfs daemon serves the backing directory.
    public static let backingInUse: Int32 = 19
    /// The mountpoint is a FUSE mount whose daemon died (ENOTCONN).
    public static let deadMount: Int32 = 23

    /// The exit codes as the commands' help shows them.
    public static let help = "Exit codes: 0 done; 1 reading or writing files failed; 17 not a snapfs mount; 20 unknown snapshot; 21 path outside the mount or missing in the snapshot; 22 the daemon refused or failed; 24 the restic repository could not be reached, opened or written (replicate, list --from, restore --from); 64 bad arguments; 77 only root (the owner of the mount's root directory) may do this."

    /// The exit codes of `snapfs mount`.
    public static let mountHelp = "Exit codes: 0 mounted; 10 backing directory missing or not a directory; 11 mountpoint missing or not a directory; 12 mountpoint not empty; 13 mountpoint already mounted; 14 /dev/fuse missing or not accessible; 15 mountpoint and backing directory overlap; 16 the mount failed for another reason (also a --metrics address it cannot listen on); 18 (at exit, in the foreground) cached data could not be written back, the files are named in the log; 19 the backing directory is already served by another snapfs daemon; 23 the mountpoint is a dead FUSE mount (its daemon was killed; clear it with fusermount3 -u MOUNTPOINT); 64 bad arguments or mount options (also a --pid-file or --log-file whose directory does not exist)."
}

/// A failure a command reports as one sentence (`snapfs: MESSAGE` on stderr) and a
/// documented exit code.
public struct CommandFailure: Error, Sendable {
    public let message: String
    public let code: Int32

    public init(_ message: String, code: Int32) {
        self.message = message
        self.code = code
    }

    public static func notSnapfsMount(_ path: String) -> CommandFailure {
        CommandFailure("\(path) is not a snapfs mount", code: ExitStatus.notSnapfsMount)
    }
}

/// Writes to the process's standard error, whole.
public enum FileHandleStandardError {
    public static func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}
