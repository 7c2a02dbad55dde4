import SnapFSSnapshots

/// The mount's status lines as Prometheus metrics (text exposition format 0.0.4): what
/// `--metrics` serves at `/metrics`.
///
/// The status lines are the one source: each metric is read from the line `snapfs status`
/// shows (the table below names it), so the two never disagree and nothing is collected
/// twice. A line the status does not have (a read-only mount has no snapshot lines; `cache: off`
/// has no cache counters) gives no metric. docs/options.md lists every metric.
///
/// No label names the mount: one daemon serves one mount, and Prometheus tells targets
/// apart by their address (`instance`); `snapfs_info` carries the backing directory.
public enum MetricsText {
    enum Kind: String { case counter, gauge }

    /// One metric taken from one status line: the `token`-th word of its value (words
    /// split at spaces, brackets removed: `5 (1234 bytes)` is `5`, `1234`, `bytes`).
    struct Plain {
        let key: String
        let token: Int
        let name: String
        let kind: Kind
        let help: String
    }

    /// One labelled metric from a status line of `label=N` words (`total=` left out).
    struct Labelled {
        let key: String
        let label: String
        let name: String
        let kind: Kind
        let help: String
    }

    static let plain: [Plain] = [
        Plain(key: "snapshots", token: 0, name: "snapfs_snapshots_kept", kind: .gauge, help: "Snapshots kept under .snapshots (status: snapshots)."),
        Plain(key: "held", token: 0, name: "snapfs_snapshots_held", kind: .gauge, help: "Snapshots held against pruning and deletion (status: held)."),
        Plain(key: "pending-durable", token: 0, name: "snapfs_snapshots_pending_durable", kind: .gauge, help: "Snapshots published but not yet made durable by a syncfs (status: pending-durable)."),
        Plain(key: "skipped-for-space", token: 0, name: "snapfs_snapshots_skipped_for_space_total", kind: .counter, help: "Snapshots not taken to keep the free space floor, since the mount (status: skipped-for-space)."),
        Plain(key: "free-bytes", token: 0, name: "snapfs_backing_free_bytes", kind: .gauge, help: "Bytes free to unprivileged users on the backing filesystem (status: free-bytes)."),
        Plain(key: "min-free-bytes", token: 0, name: "snapfs_min_free_bytes", kind: .gauge, help: "The free space floor (min_free) in bytes on the backing filesystem (status: min-free-bytes)."),
        Plain(key: "sqlite-commits", token: 0, name: "snapfs_sqlite_commits_total", kind: .counter, help: "SQLite transaction commits seen (status: sqlite-commits)."),
        Plain(key: "sqlite-snapshots", token: 0, name: "snapfs_sqlite_commit_snapshots_total", kind: .counter, help: "Snapshots taken at SQLite commits (status: sqlite-snapshots)."),
        Plain(key: "sqlite-rollbacks", token: 0, name: "snapfs_sqlite_rollbacks_total", kind: .counter, help: "SQLite transactions seen rolled back (status: sqlite-rollbacks)."),
        Plain(key: "sqlite-deferred", token: 0, name: "snapfs_sqlite_deferred_commits_total", kind: .counter, help: "SQLite commits covered by a later snapshot (status: sqlite-deferred)."),
        Plain(key: "sqlite-failures", token: 0, name: "snapfs_sqlite_snapshot_failures_total", kind: .counter, help: "SQLite commits whose snapshot failed (status: sqlite-failures)."),
        Plain(key: "sqlite-databases", token: 0, name: "snapfs_sqlite_databases", kind: .gauge, help: "Databases whose commits were seen (status: sqlite-databases)."),
        Plain(key: "sqlite-pending", token: 0, name: "snapfs_sqlite_pending_commits", kind: .gauge, help: "Commits waiting for the snapshot after their interval (status: sqlite-pending)."),
        Plain(key: "cache dirty", token: 0, name: "snapfs_cache_dirty_bytes", kind: .gauge, help: "Bytes in the page cache not yet written back (status: cache dirty)."),
        Plain(key: "cache cached", token: 0, name: "snapfs_cache_cached_bytes", kind: .gauge, help: "Bytes in the page cache, clean and dirty (status: cache cached)."),
        Plain(key: "cache hits", token: 0, name: "snapfs_cache_hits_total", kind: .counter, help: "Page cache lookups that found the page (status: cache hits)."),
        Plain(key: "cache misses", token: 0, name: "snapfs_cache_misses_total", kind: .counter, help: "Page cache lookups that did not (status: cache misses)."),
        Plain(key: "cache write-backs", token: 0, name: "snapfs_cache_write_backs_total", kind: .counter, help: "Write-backs of cached data to the backing files (status: cache write-backs)."),
        Plain(key: "cache write-backs", token: 1, name: "snapfs_cache_written_back_bytes_total", kind: .counter, help: "Bytes written back from the page cache (status: cache write-backs)."),
        Plain(key: "cache write-back errors", token: 0, name: "snapfs_cache_write_back_errors_total", kind: .counter, help: "Write-backs that failed (ENOSPC, EIO); the data stays cached (status: cache write-back errors)."),
        Plain(key: "descriptors", token: 0, name: "snapfs_open_descriptors", kind: .gauge, help: "Descriptors the daemon has open (status: descriptors)."),
        Plain(key: "descriptors", token: 2, name: "snapfs_descriptor_limit", kind: .gauge, help: "The daemon's descriptor limit (status: descriptors)."),
        Plain(key: "hooks-skipped", token: 0, name: "snapfs_snapshots_skipped_by_hook_total", kind: .counter, help: "Snapshots skipped because the pre-snapshot hook failed (status: hooks-skipped)."),
        Plain(key: "hooks-post-failed", token: 0, name: "snapfs_post_snapshot_hook_failures_total", kind: .counter, help: "Post-snapshot hooks that failed (status: hooks-post-failed)."),
        Plain(key: "replication-waiting", token: 0, name: "snapfs_replication_waiting_snapshots", kind: .gauge, help: "Snapshots not yet sent to the replication repository (status: replication-waiting)."),
        Plain(key: "open-handles", token: 0, name: "snapfs_open_handles", kind: .gauge, help: "Files and directories held open for users through the mount (status: open-handles)."),
    ]

    static let labelled: [Labelled] = [
        Labelled(key: "snapshots-made", label: "trigger", name: "snapfs_snapshots_made_total", kind: .counter, help: "Snapshots made since the mount, by trigger (status: snapshots-made)."),
        Labelled(key: "snapshots-failed", label: "trigger", name: "snapfs_snapshots_failed_total", kind: .counter, help: "Snapshots that failed since the mount, by trigger; skipped for space not included (status: snapshots-failed)."),
        Labelled(key: "requests", label: "op", name: "snapfs_fuse_requests_total", kind: .counter, help: "Requests the kernel sent the daemon since the mount, by kind (status: requests)."),
    ]

    /// The exposition of `status` (the status lines) at `nowMs` (ms since the epoch) for a
    /// daemon started at `startedMs`.
    public static func render(status: [String], nowMs: Int64, startedMs: Int64) -> String {
        var values: [String: String] = [:]
        for line in status {
            if let (key, value) = StatusLine.split(line), values[key] == nil { values[key] = value }
        }
        var out = ""
        func family(_ name: String, _ kind: Kind, _ help: String, _ samples: [(labels: String, value: String)]) {
            guard !samples.isEmpty else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(kind.rawValue)\n"
            for sample in samples { out += "\(name)\(sample.labels) \(sample.value)\n" }
        }
        func seconds(_ ms: Int64) -> String { ms % 1000 == 0 ? "\(ms / 1000)" : "\(Double(ms) / 1000)" }

        var info: [(String, String)] = []
        for key in ["backing", "strategy", "build", "sqlite"] {
            if let value = values[key] { info.append((key, value)) }
        }
        family("snapfs_info", .gauge, "Always 1; the labels say what the mount is and does (status: backing, strategy, build, sqlite).",
               [(labels(info), "1")])
        family("snapfs_start_time_seconds", .gauge, "When the daemon started, in seconds since the epoch.", [("", seconds(startedMs))])
        if let newest = values["newest"] {
            // `-`: no snapshot yet, so no age.
            let samples = SnapshotName(parsing: newest).map { [("", seconds($0.timeMs))] } ?? []
            family("snapfs_newest_snapshot_timestamp_seconds", .gauge, "When the newest snapshot was taken, in seconds since the epoch (status: newest).", samples)
            let age = SnapshotName(parsing: newest).map { [("", seconds(max(0, nowMs - $0.timeMs)))] } ?? []
            family("snapfs_newest_snapshot_age_seconds", .gauge, "Seconds since the newest snapshot was taken (status: newest).", age)
        }
        if let oldest = values["replication-oldest-waiting"] {
            // The replication lag: how old the oldest snapshot not yet sent is (none: 0).
            let lag = SnapshotName(parsing: oldest).map { seconds(max(0, nowMs - $0.timeMs)) } ?? "0"
            family("snapfs_replication_lag_seconds", .gauge, "Age of the oldest snapshot not yet sent to the replication repository; 0 when none waits (status: replication-oldest-waiting).",
                   [("", lag)])
        }
        if let error = values["replication-last-error"] {
            family("snapfs_replication_failing", .gauge, "1 while the last replication run failed (status: replication-last-error).",
                   [("", error == "-" ? "0" : "1")])
        }
        if let changed = values["changed"] {
            family("snapfs_changed_since_newest_snapshot", .gauge, "1 if anything changed since the newest snapshot (status: changed).",
                   [("", changed == "yes" ? "1" : "0")])
        }
        if values["build"] != nil {
            family("snapfs_snapshot_building", .gauge, "1 while a tree snapshot is being built in the background (status: building).",
                   [("", values["building"] == nil ? "0" : "1")])
        }
        for metric in plain {
            guard let value = values[metric.key] else { continue }
            let words = value.split(separator: " ").map { $0.trimmingBrackets }
            guard metric.token < words.count, let number = Int64(words[metric.token]) else { continue }
            family(metric.name, metric.kind, metric.help, [("", "\(number)")])
        }
        for metric in labelled {
            guard let value = values[metric.key] else { continue }
            var samples: [(labels: String, value: String)] = []
            for word in value.split(separator: " ") {
                guard let equals = word.firstIndex(of: "="), let number = UInt64(word[word.index(after: equals)...]) else { continue }
                let name = String(word[..<equals])
                if name != "total" { samples.append((labels([(metric.label, name)]), "\(number)")) }
            }
            family(metric.name, metric.kind, metric.help, samples)
        }
        return out
    }

    /// `{a="x",b="y"}` with the values escaped as the format wants (`\\`, `\"`, `\n`).
    static func labels(_ pairs: [(String, String)]) -> String {
        guard !pairs.isEmpty else { return "" }
        let escaped = pairs.map { name, value in
            var text = ""
            for character in value {
                switch character {
                case "\\": text += "\\\\"
                case "\"": text += "\\\""
                case "\n": text += "\\n"
                default: text.append(character)
                }
            }
            return "\(name)=\"\(text)\""
        }
        return "{" + escaped.joined(separator: ",") + "}"
    }
}

extension Substring {
    /// Without the brackets around a word of a status value: `(1234` → `1234`.
    var trimmingBrackets: Substring {
        drop { $0 == "(" }.prefix { $0 != ")" }
    }
}
