import ArgumentParser
import Glibc
import SnapFSBacking
import SnapFSDaemon

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount BACKING at MOUNTPOINT through snapfs.",
        discussion: """
        Runs in the background and returns once the mount is ready, unless --foreground. The daemon flushes and exits on unmount, SIGINT, SIGTERM or SIGHUP.

        -o takes FUSE mount options (allow_other, default_permissions, ro, rw, fsname=…, max_read=…) and these of snapfs: nonempty (mount over a non-empty directory); cache_size=, dirty_limit=, dirty_age= (as the flags below); writeback_cache / no_writeback_cache (the kernel's write-back cache, on by default: small writes are batched into pages; with no_writeback_cache every write() is a request, and, run as root on Linux ≥ 6.9, files opened read-only and DELETE-mode journals pass through to the backing file); nopassthrough (with no_writeback_cache: serve every read through snapfs); uring / nouring (requests over io_uring with per-CPU queues, off by default: Linux ≥ 6.14, root; sets the fuse module's enable_uring parameter; implies no_writeback_cache); noallow_other (when run as root, do not add allow_other); noacl (do not enforce POSIX ACLs: saves a request after each change to a directory); max_files_per_user=N, max_dirs_per_user=N (the most files and directories one user may hold open through the mount; past it that user's open fails with EMFILE; default a quarter of the daemon's descriptor limit, and 1024); durable_delay=D (how long a new snapshot may wait for the batch that makes it durable, one syncfs for many: 0 to 1h, default 5s); frozen_build (build tree snapshots with every change held at the gate, as before background builds); metrics=[ADDR:]PORT (as --metrics); debug (same as --debug). The words mount(8) passes from /etc/fstab (defaults, auto, noauto, user, nofail, _netdev, x-…) are accepted and ignored. snapfs always uses default_permissions, and adds allow_other when run as root, so that the mount behaves for every user like the directory itself.

        \(ExitStatus.mountHelp)
        """
    )

    @Argument(help: "The directory whose contents snapfs serves and snapshots.")
    var backing: String

    @Argument(help: "Where to mount it (an empty directory).")
    var mountpoint: String

    @Flag(name: [.short, .long], help: "Stay in the foreground instead of running as a daemon.")
    var foreground = false

    @Option(name: .customShort("o"), help: ArgumentHelp("Mount options, comma-separated (repeatable).", valueName: "OPTION[,OPTION...]"))
    var options: [String] = []

    @Flag(name: [.short, .long], help: "Log every request (to stderr, or to --log-file).")
    var debug = false

    @Option(name: .long, help: "Write the daemon's pid to this file.")
    var pidFile: String?

    @Option(name: .long, help: "Append the daemon's log to this file.")
    var logFile: String?

    @Option(name: .long, help: ArgumentHelp("How snapshots are made: auto (btrfs, else reflink, else hardlink), btrfs, reflink, hardlink or copy. Same as -o strategy=….", valueName: "STRATEGY"))
    var strategy: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest N snapshots (-o keep_last=N).", valueName: "N"))
    var keepLast: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest snapshot of each of the last N hours (-o keep_hourly=N).", valueName: "N"))
    var keepHourly: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest snapshot of each of the last N days (-o keep_daily=N).", valueName: "N"))
    var keepDaily: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest snapshot of each of the last N ISO weeks (-o keep_weekly=N).", valueName: "N"))
    var keepWeekly: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest snapshot of each of the last N months (-o keep_monthly=N).", valueName: "N"))
    var keepMonthly: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Keep the newest N snapshots taken at SQLite commits of each database (-o keep_commits=N; default 100 when no other retention rule is given; 0: no bound).", valueName: "N"))
    var keepCommits: Int?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Free space snapshots always leave to users, a share or a size, e.g. 5%, 2G; below it the retention rules are applied early, else the snapshot is skipped (-o min_free=…; default 5%; 0: none).", valueName: "SIZE|PERCENT"))
    var minFree: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Serve Prometheus metrics at http://ADDR:PORT/metrics; a bare PORT (or :PORT) is 127.0.0.1:PORT, another address only when given, e.g. [::1]:9419 (-o metrics=…; docs/monitoring.md).", valueName: "[ADDR:]PORT"))
    var metrics: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Also take a snapshot at this interval, e.g. 15m, 1h (-o every=…).", valueName: "DURATION"))
    var every: String?

    @Flag(name: .long, help: "Take a snapshot even when nothing changed since the newest one (-o snapshot_unchanged).")
    var snapshotUnchanged = false

    @Option(name: .long, help: ArgumentHelp("At SQLite commits: snapshot (the default), detect (recognise and count them, no snapshot) or off (-o sqlite=…).", valueName: "MODE"))
    var sqlite: String?

    @Option(name: .long, help: ArgumentHelp("What a commit snapshot holds: database (the database file alone, the default) or tree (-o sqlite_scope=…).", valueName: "SCOPE"))
    var sqliteScope: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("How often a database's commits get a snapshot: auto (the default: snapshots take at most a third of the application's time, and come at most every 100 ms where they clone the file: reflink, btrfs; every second where they copy it: hardlink, copy), at most one per DURATION (e.g. 1s), or 0: every commit. Always at a commit; the final state follows once commits stop (-o sqlite_min_interval=…).", valueName: "auto|DURATION"))
    var sqliteMinInterval: String?

    @Option(name: .long, help: ArgumentHelp("Only databases whose path (relative to the root) or name matches the glob (repeatable; -o sqlite_include=…).", valueName: "GLOB"))
    var sqliteInclude: [String] = []

    @Option(name: .long, help: ArgumentHelp("Not the databases whose path or name matches the glob (repeatable; -o sqlite_exclude=…).", valueName: "GLOB"))
    var sqliteExclude: [String] = []

    @Option(name: .long, parsing: .unconditionalSingleValue, help: ArgumentHelp("Leave paths out of tree snapshots: a glob without / matches names at any depth (*.tmp, .cache), one with / the path from the root (build/cache, */node_modules); an excluded directory is left out whole (repeatable, at most 64; -o exclude=…; docs/snapshots.md#exclusions).", valueName: "GLOB"))
    var exclude: [String] = []

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Memory for snapfs's page cache of written data, e.g. 64M, 1G; 0 turns it off (-o cache_size=…; default 256M).", valueName: "SIZE"))
    var cacheSize: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Dirty data past which writers write back before going on (-o dirty_limit=…; default half the cache).", valueName: "SIZE"))
    var dirtyLimit: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Dirty data older than this is written back in the background, e.g. 500ms, 5s (-o dirty_age=…; default 5s).", valueName: "DURATION"))
    var dirtyAge: String?

    @Option(name: .long, help: ArgumentHelp("A command run (by /bin/sh) before each snapshot; if it fails, the snapshot is skipped (-o pre_snapshot=…; docs/snapshots.md#hooks).", valueName: "COMMAND"))
    var preSnapshot: String?

    @Option(name: .long, help: ArgumentHelp("A command run (by /bin/sh) after each snapshot, made or not, with its name and result in the environment (-o post_snapshot=…).", valueName: "COMMAND"))
    var postSnapshot: String?

    @Option(name: .long, help: ArgumentHelp("How long a hook may run before it is killed (-o hook_timeout=…; default 60s).", valueName: "DURATION"))
    var hookTimeout: String?

    @Flag(name: .long, help: "Run the hooks for SQLite commit snapshots too (-o hooks_on_commits; off: they would run at every commit).")
    var hooksOnCommits = false

    @Option(name: .long, help: ArgumentHelp("Replicate every snapshot to this restic repository in the background, as snapfs replicate does (-o replicate_to=…; docs/replication.md). The repository must exist; credentials come from the daemon's environment (AWS_*, RESTIC_PASSWORD_FILE, …) or --replicate-password-file.", valueName: "REPOSITORY"))
    var replicateTo: String?

    @Option(name: .long, help: ArgumentHelp("The repository's password file (-o replicate_password_file=…, an absolute path there).", valueName: "FILE"))
    var replicatePasswordFile: String?

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("At most one commit snapshot per database per interval is replicated (-o replicate_commit_interval=…; default 5s; 0: every one).", valueName: "DURATION"))
    var replicateCommitInterval: String?

    @Option(name: .long, help: .hidden)
    var readyFd: Int32?

    /// The snapshot flags as -o options, so that fstab (which has only -o) and the command
    /// line mean the same, and the daemon gets them through -o.
    var allOptions: [String] {
        var extra: [String] = []
        if let strategy { extra.append("strategy=\(strategy)") }
        if let keepLast { extra.append("keep_last=\(keepLast)") }
        if let keepHourly { extra.append("keep_hourly=\(keepHourly)") }
        if let keepDaily { extra.append("keep_daily=\(keepDaily)") }
        if let keepWeekly { extra.append("keep_weekly=\(keepWeekly)") }
        if let keepMonthly { extra.append("keep_monthly=\(keepMonthly)") }
        if let keepCommits { extra.append("keep_commits=\(keepCommits)") }
        if let minFree { extra.append("min_free=\(minFree)") }
        if let every { extra.append("every=\(every)") }
        if let metrics { extra.append("metrics=\(metrics)") }
        if snapshotUnchanged { extra.append("snapshot_unchanged") }
        if let sqlite { extra.append("sqlite=\(sqlite)") }
        if let sqliteScope { extra.append("sqlite_scope=\(sqliteScope)") }
        if let sqliteMinInterval { extra.append("sqlite_min_interval=\(sqliteMinInterval)") }
        if let cacheSize { extra.append("cache_size=\(cacheSize)") }
        if let dirtyLimit { extra.append("dirty_limit=\(dirtyLimit)") }
        if let dirtyAge { extra.append("dirty_age=\(dirtyAge)") }
        if let preSnapshot { extra.append("pre_snapshot=\(preSnapshot)") }
        if let postSnapshot { extra.append("post_snapshot=\(postSnapshot)") }
        if let hookTimeout { extra.append("hook_timeout=\(hookTimeout)") }
        if hooksOnCommits { extra.append("hooks_on_commits") }
        if let replicateTo { extra.append("replicate_to=\(replicateTo)") }
        if let replicatePasswordFile { extra.append("replicate_password_file=\(absolutePath(replicatePasswordFile))") }
        if let replicateCommitInterval { extra.append("replicate_commit_interval=\(replicateCommitInterval)") }
        extra += sqliteInclude.map { "sqlite_include=\($0)" } + sqliteExclude.map { "sqlite_exclude=\($0)" }
        extra += exclude.map { "exclude=\($0)" }
        return options.flatMap { $0.split(separator: ",").map(String.init) } + extra
    }

    /// A negative count would read as a flag; with `.unconditional` parsing it reaches here.
    func validate() throws {
        let counts = [("--keep-last", keepLast), ("--keep-hourly", keepHourly), ("--keep-daily", keepDaily),
                      ("--keep-weekly", keepWeekly), ("--keep-monthly", keepMonthly), ("--keep-commits", keepCommits)]
        for case let (flag, count?) in counts where count < 0 {
            throw ValidationError("\(flag) must be a whole number ≥ 0, not \(count)")
        }
        // The daemon gets every option through -o, which splits at commas.
        for pattern in exclude where pattern.contains(",") {
            throw ValidationError("--exclude \(pattern): a pattern cannot hold a comma (options reach the daemon as -o, which splits at commas); give two patterns instead")
        }
        for (flag, path) in [("--pid-file", pidFile), ("--log-file", logFile)] {
            if let path, let problem = Daemon.unwritableFileProblem(path) {
                throw ValidationError("\(flag) \(path): \(problem)")
            }
        }
    }

    func run() throws {
        try Daemon.mount(MountRequest(backing: backing, mountpoint: mountpoint, options: allOptions,
                                      foreground: foreground, debug: debug, pidFile: pidFile,
                                      logFile: logFile, readyFD: readyFd))
    }
}
