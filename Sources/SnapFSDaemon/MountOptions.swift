import SnapFSBacking
import SnapFSCache
import SnapFSCore
import SnapFSReplication
import SnapFSSQLite
import SnapFSSnapshots
/// The `-o` options of `snapfs mount`, split into snapfs's own and those for libfuse.
public struct MountOptions: Sendable, Equatable {
    public var allowNonEmpty = false
    /// The kernel's write-back cache (`writeback_cache`, the default; `no_writeback_cache`
    /// turns it off, and so does `uring` unless `writeback_cache` is given too, which is an
    /// error). The kernel then batches small writes into pages and sends them at write-back
    /// (docs/performance.md, "Choosing the default").
    public var writebackCache = true
    /// FUSE passthrough of files opened read-only and of DELETE-mode journals (`passthrough`,
    /// on by default; needs root and Linux ≥ 6.9). The kernel allows it only on a connection
    /// without the write-back cache, so it works with `no_writeback_cache` (or `uring`).
    public var passthrough = true
    /// Requests over io_uring, per-CPU queues (`uring`, off by default; Linux ≥ 6.14).
    public var uring = false
    public var readOnly = false
    public var debug = false
    public var noAllowOther = false
    public var posixACL = true
    /// How snapshots are taken, kept and timed (`strategy=`, `keep_last=`, `every=`, …).
    public var snapshots = SnapshotOptions()
    /// SQLite commit detection (`sqlite=`, `sqlite_scope=`, `sqlite_min_interval=`, …).
    public var sqlite = SQLiteOptions()
    /// snapfs's page cache (`cache_size=`, `dirty_limit=`, `dirty_age=`).
    public var cache = CachePolicy()
    /// The most files (`max_files_per_user=`) and directories (`max_dirs_per_user=`) one
    /// user may hold open through the mount (nil: ``HandleLedger/Limits/defaults(descriptorLimit:)``).
    public var maxFilesPerUser: Int?
    public var maxDirectoriesPerUser: Int?
    /// Continuous replication to a restic repository (`replicate_to=`, …), or nil.
    public var replication: ReplicationSettings?
    /// Where to serve Prometheus metrics (`metrics=ADDR:PORT`; docs/monitoring.md).
    public var metrics: MetricsAddress?
    /// Options that could not be understood, each as one sentence.
    public var problems: [String] = []
    /// Options passed on to libfuse and the kernel, in the order given.
    public var passed: [String] = []

    /// Options mount(8) hands every helper that mean nothing to a FUSE mount.
    public static let ignored: Set<String> = ["defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "rw"]

    public init(_ options: [String]) {
        for option in options where !option.isEmpty {
            switch option {
            case "nonempty": allowNonEmpty = true
            case "writeback_cache": writebackCacheGiven = true
            case "no_writeback_cache": writebackCacheGiven = false
            case "passthrough": passthrough = true
            case "nopassthrough", "no_passthrough": passthrough = false
            case "uring": uring = true
            case "nouring", "no_uring": uring = false
            case "debug": debug = true
            case "noallow_other": noAllowOther = true
            case "acl": posixACL = true
            case "noacl": posixACL = false
            case "ro":
                readOnly = true
                passed.append(option)
            case "snapshot_unchanged": snapshots.skipUnchanged = false
            case "frozen_build": snapshots.backgroundBuild = false
            case "hooks_on_commits": snapshots.hooks.onCommits = true
            case _ where option.hasPrefix("exclude="): excludePatterns.append(String(option.dropFirst("exclude=".count)))
            case _ where option.hasPrefix("pre_snapshot="): snapshots.hooks.pre = hookCommand(option)
            case _ where option.hasPrefix("post_snapshot="): snapshots.hooks.post = hookCommand(option)
            case _ where Self.ignored.contains(option) || option.hasPrefix("x-") || option.hasPrefix("comment="):
                continue
            case _ where option.contains("=") && Self.snapshotKeys.contains(String(option.prefix { $0 != "=" })):
                parseSnapshotOption(option)
            case _ where option.contains("=") && option.hasPrefix("sqlite"):
                parseSQLiteOption(option)
            case _ where option.contains("=") && Self.cacheKeys.contains(String(option.prefix { $0 != "=" })):
                parseCacheOption(option)
            case _ where option.contains("=") && option.hasPrefix("replicate_"):
                replicationOptions.append(option)
            case _ where option.hasPrefix("metrics="):
                let value = String(option.dropFirst("metrics=".count))
                if let address = MetricsAddress(parsing: value) {
                    metrics = address
                } else {
                    problems.append("metrics=\(value) is not a port or ADDRESS:PORT (like 9419, 127.0.0.1:9419, [::1]:9419; port 1-65535)")
                }
            case _ where option.hasPrefix("max_files_per_user=") || option.hasPrefix("max_dirs_per_user="):
                let key = String(option.prefix { $0 != "=" })
                guard let count = Int(option.dropFirst(key.count + 1)), count > 0 else {
                    problems.append("\(option) is not a positive number of open files")
                    continue
                }
                if key == "max_files_per_user" { maxFilesPerUser = count } else { maxDirectoriesPerUser = count }
            default:
                passed.append(option)
            }
        }
        problems += cache.problems
        switch SnapshotExclusions.parse(excludePatterns) {
        case .success(let exclusions): snapshots.exclusions = exclusions
        case .failure(let problem): problems.append(problem.message)
        }
        parseReplicationOptions(replicationOptions)
        if readOnly && replication != nil {
            problems.append("replicate_to= sends the snapshots a mount takes, and a read-only mount takes none (snapfs replicate BACKING --to REPO sends those there are)")
        }
        // FUSE over io_uring serves the mode without the kernel's cache, where every small
        // write is a request: that is the round trip it shortens.
        switch (writebackCacheGiven, uring) {
        case (true?, true): problems.append("uring and writeback_cache cannot be combined: uring serves mounts without the kernel's write-back cache (use one, or no_writeback_cache,uring)")
        case (let given?, _): writebackCache = given
        case (nil, let ring): writebackCache = !ring
        }
        // Any user can make commits: with no rule given, their snapshots are still bounded.
        if snapshots.retention.isEmpty && !keepCommitsGiven {
            snapshots.retention.keepCommits = RetentionPolicy.defaultKeepCommits
        }
    }

    /// The `exclude=` patterns, in order, read once all are known.
    private var excludePatterns: [String] = []

    /// The `replicate_*=` options, read once all are known.
    private var replicationOptions: [String] = []

    private mutating func parseReplicationOptions(_ options: [String]) {
        var location: String?
        var passwordFile: String?
        var intervalMs = Replicator.defaultCommitIntervalMs
        for option in options {
            let key = String(option.prefix { $0 != "=" })
            let value = String(option.dropFirst(key.count + 1))
            switch key {
            case "replicate_to":
                if value.isEmpty { problems.append("replicate_to= needs a restic repository") } else { location = value }
            case "replicate_password_file":
                if value.hasPrefix("/") { passwordFile = value } else { problems.append("replicate_password_file=\(value) must be an absolute path") }
            case "replicate_commit_interval":
                if let ms = value == "0" ? 0 : Self.parseDuration(value) {
                    intervalMs = ms
                } else {
                    problems.append("replicate_commit_interval=\(value) is not a duration (like 500ms, 5s, 1m, or 0)")
                }
            default:
                problems.append("unknown option \(key) (replicate_to, replicate_password_file, replicate_commit_interval)")
            }
        }
        guard let location else {
            if !options.isEmpty && problems.isEmpty { problems.append("replicate_password_file= and replicate_commit_interval= need replicate_to=") }
            return
        }
        var settings = ReplicationSettings(location: location, passwordFile: passwordFile)
        settings.commitIntervalMs = intervalMs
        replication = settings
    }

    /// `keep_commits=` was given (0 then means: no bound).
    private var keepCommitsGiven = false
    /// `writeback_cache` (true) or `no_writeback_cache` (false) was given; the last one counts.
    private var writebackCacheGiven: Bool?

    static let snapshotKeys: Set<String> = ["strategy", "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                                            "keep_commits", "every", "min_free", "durable_delay", "hook_timeout"]

    /// The command of `pre_snapshot=` or `post_snapshot=` (not empty).
    private mutating func hookCommand(_ option: String) -> String? {
        let key = String(option.prefix { $0 != "=" })
        let command = String(option.dropFirst(key.count + 1))
        if command.allSatisfy({ $0 == " " || $0 == "\t" }) {
            problems.append("\(key)= needs a command (a program or a shell command line)")
            return nil
        }
        return command
    }

    private mutating func parseSnapshotOption(_ option: String) {
        let key = String(option.prefix { $0 != "=" })
        let value = String(option.dropFirst(key.count + 1))
        switch key {
        case "strategy":
            if value == "auto" {
                snapshots.strategy = nil
            } else if let strategy = SnapshotStrategy(rawValue: value) {
                snapshots.strategy = strategy
            } else {
                problems.append("unknown strategy \(value) (auto, btrfs, reflink, hardlink or copy)")
            }
        case "min_free":
            if let floor = SpaceFloor(parsing: value) {
                snapshots.minFree = floor
            } else {
                problems.append("min_free=\(value) is not a share or a size (like 5%, 0, 512M, 2G)")
            }
        case "every":
            if let ms = Self.parseDuration(value), ms >= 1000 {
                snapshots.intervalMs = ms
            } else {
                problems.append("every=\(value) is not a duration of at least 1s (like 30s, 15m, 1h, 1d)")
            }
        case "hook_timeout":
            if let ms = Self.parseDuration(value), ms >= 100, ms <= 3_600_000 {
                snapshots.hooks.timeoutMs = ms
            } else {
                problems.append("hook_timeout=\(value) is not a duration from 100ms to 1h (like 30s, 5m)")
            }
        case "durable_delay":
            if let ms = value == "0" ? 0 : Self.parseDuration(value), ms <= 3_600_000 {
                snapshots.durableDelayMs = ms
            } else {
                problems.append("durable_delay=\(value) is not a duration of at most 1h (like 0, 200ms, 1s, 5m)")
            }
        default:
            guard let count = Int(value), count >= 0 else {
                problems.append("\(key)=\(value): the number of snapshots must be a whole number ≥ 0")
                return
            }
            switch key {
            case "keep_last": snapshots.retention.keepLast = count
            case "keep_hourly": snapshots.retention.keepHourly = count
            case "keep_daily": snapshots.retention.keepDaily = count
            case "keep_weekly": snapshots.retention.keepWeekly = count
            case "keep_commits":
                snapshots.retention.keepCommits = count
                keepCommitsGiven = true
            default: snapshots.retention.keepMonthly = count
            }
        }
    }

    static let cacheKeys: Set<String> = ["cache_size", "dirty_limit", "dirty_age"]

    private mutating func parseCacheOption(_ option: String) {
        let key = String(option.prefix { $0 != "=" })
        let value = String(option.dropFirst(key.count + 1))
        switch key {
        case "dirty_age":
            if let ms = Self.parseDuration(value) {
                cache.dirtyAgeMs = ms
            } else {
                problems.append("dirty_age=\(value) is not a duration (like 500ms, 5s, 1m)")
            }
        default:
            guard let bytes = ByteSize.parse(value) else {
                problems.append("\(key)=\(value) is not a size (like 0, 4096, 512K, 64M, 1G)")
                return
            }
            if key == "cache_size" { cache.size = bytes } else { cache.dirtyLimit = bytes }
        }
    }

    private mutating func parseSQLiteOption(_ option: String) {
        let key = String(option.prefix { $0 != "=" })
        let value = String(option.dropFirst(key.count + 1))
        switch key {
        case "sqlite":
            let aliases = ["on": SQLiteOptions.Mode.snapshot, "yes": .snapshot, "no": .off]
            if let mode = SQLiteOptions.Mode(rawValue: value) ?? aliases[value] {
                sqlite.mode = mode
            } else {
                problems.append("sqlite=\(value) is not one of off, detect, snapshot")
            }
        case "sqlite_scope":
            if let scope = SQLiteOptions.Scope(rawValue: value) {
                sqlite.scope = scope
            } else {
                problems.append("sqlite_scope=\(value) is not one of database, tree")
            }
        case "sqlite_min_interval":
            if value == "auto" {
                sqlite.minInterval = .auto
            } else if value == "0" {
                sqlite.minInterval = .fixed(0)
            } else if let ms = Self.parseDuration(value) {
                sqlite.minInterval = .fixed(ms)
            } else {
                problems.append("sqlite_min_interval=\(value) is not auto or a duration (like 500ms, 1s, 5m, or 0)")
            }
        case "sqlite_include", "sqlite_exclude":
            if value.isEmpty {
                problems.append("\(key)= needs a glob")
            } else if key == "sqlite_include" {
                sqlite.include.append(value)
            } else {
                sqlite.exclude.append(value)
            }
        default:
            problems.append("unknown option \(key) (sqlite, sqlite_scope, sqlite_min_interval, sqlite_include, sqlite_exclude)")
        }
    }

    /// `90`, `90s`, `15m`, `2h`, `1d`, `500ms` → milliseconds.
    public static func parseDuration(_ text: String) -> Int64? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if suffix == "s" && number.hasSuffix("m") { continue }
            guard let value = Int64(number), value > 0 else { return nil }
            return value.multipliedReportingOverflow(by: factor).overflow ? nil : value * factor
        }
        guard let seconds = Int64(text), seconds > 0 else { return nil }
        return seconds * 1000
    }

    /// The per-user bounds on open files and directories, given the daemon's descriptor limit.
    public func handleLimits(descriptorLimit: Int) -> HandleLedger.Limits {
        var limits = HandleLedger.Limits.defaults(descriptorLimit: descriptorLimit)
        if let maxFilesPerUser { limits.files = maxFilesPerUser }
        if let maxDirectoriesPerUser { limits.directories = maxDirectoriesPerUser }
        return limits
    }

    /// What libfuse gets: the user's options plus snapfs's defaults.
    public func fuseOptions(backing: String, asRoot: Bool) -> [String] {
        var result = ["fsname=\(backing.escapingCommas)", "subtype=snapfs", "default_permissions"]
        if asRoot && !noAllowOther && !passed.contains("allow_other") { result.append("allow_other") }
        result += passed.filter { $0 != "default_permissions" }
        return result
    }
}

extension String {
    /// libfuse splits -o at commas; a comma inside a value is written `\,`.
    var escapingCommas: String {
        split(separator: ",", omittingEmptySubsequences: false).joined(separator: "\\,")
    }
}
