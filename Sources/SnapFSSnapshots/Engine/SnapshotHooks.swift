import Glibc
import SnapFSBacking

/// Programs run before and after each snapshot (`--pre-snapshot`, `--post-snapshot`), for
/// snapshots that are consistent for an application (flush a server, pause a job), as
/// sanoid's and zrepl's hooks are.
///
/// Each runs as `/bin/sh -c COMMAND`, with the daemon's environment and these (see
/// docs/snapshots.md#hooks): `SNAPFS_HOOK` (`pre` or `post`), `SNAPFS_TRIGGER` (the trigger's
/// kind), `SNAPFS_LABEL`, `SNAPFS_MOUNT`, `SNAPFS_BACKING`; after: `SNAPFS_RESULT` (`created`,
/// `unchanged`, `failed` or `skipped`), and for a snapshot made `SNAPFS_SNAPSHOT` (its name)
/// and `SNAPFS_SNAPSHOT_PATH` (its directory under the mount's `.snapshots`). A hook that
/// runs past `timeoutMs` is killed, with what it started. A pre-hook that fails (a status
/// other than 0, or killed) skips the snapshot. The post-hook runs after every snapshot
/// asked for, made, unchanged, failed or skipped. No lock of the engine is held meanwhile.
public struct SnapshotHooks: Sendable, Equatable {
    public var pre: String?
    public var post: String?
    public var timeoutMs: Int64 = 60_000
    /// Run them for SQLite commit snapshots too (off: they would run at every commit).
    public var onCommits = false
    /// The mount point, for `SNAPFS_MOUNT` and `SNAPFS_SNAPSHOT_PATH`.
    public var mountpoint = ""

    public init() {}

    public var isEmpty: Bool { pre == nil && post == nil }

    /// Whether snapshots with this trigger run the hooks.
    public func apply(to trigger: Trigger) -> Bool {
        !isEmpty && (onCommits || trigger.kind != .sqlite)
    }

    /// What a hook's run came to.
    public struct Run: Sendable {
        public var status: Int32
        public var timedOut: Bool
        /// The last line it wrote on its standard error, for the log.
        public var lastErrorLine: String

        public var succeeded: Bool { status == 0 && !timedOut }

        public var summary: String {
            let how = timedOut ? "was killed after its timeout" : "exited with status \(status)"
            return lastErrorLine.isEmpty ? how : "\(how): \(lastErrorLine)"
        }
    }

    /// Runs `command`; nil when it could not be started (no /bin/sh).
    func run(_ command: String, stage: String, trigger: Trigger, label: String?, backing: String,
             result: String? = nil, snapshot: String? = nil) -> Run? {
        var environment = ChildProcess.callerEnvironment().filter { !$0.key.hasPrefix("SNAPFS_") }.map { "\($0.key)=\($0.value)" }
        environment += ["SNAPFS_HOOK=\(stage)", "SNAPFS_TRIGGER=\(trigger.kind.rawValue)", "SNAPFS_LABEL=\(label ?? "")",
                        "SNAPFS_MOUNT=\(mountpoint)", "SNAPFS_BACKING=\(backing)"]
        if let result { environment.append("SNAPFS_RESULT=\(result)") }
        if let snapshot {
            environment += ["SNAPFS_SNAPSHOT=\(snapshot)", "SNAPFS_SNAPSHOT_PATH=\(mountpoint)/.snapshots/\(snapshot)"]
        }
        var child = ChildProcess(arguments: ["/bin/sh", "-c", command], environment: environment)
        child.timeoutMs = Int(timeoutMs)
        guard let outcome = try? child.run() else { return nil }
        let lines = outcome.errorText.split(separator: "\n", omittingEmptySubsequences: true)
        return Run(status: outcome.status, timedOut: outcome.timedOut, lastErrorLine: lines.last.map(String.init) ?? "")
    }
}
