/// Which snapshots to keep, in the style of restic `forget` and sanoid.
///
/// Every rule is a count; nil, 0 (or a negative number) turns the rule off.
/// - `keepLast N`: the newest N snapshots.
/// - `keepHourly/Daily/Weekly/Monthly N`: for each of the N most recent hours, days, ISO 8601
///   weeks (Monday to Sunday) or calendar months *that contain a snapshot*, the newest
///   snapshot of that period. Periods are in UTC. Periods without snapshots do not count, so
///   `keepDaily 7` keeps seven snapshots even if some days had none.
///
/// A snapshot survives if any rule keeps it. In addition:
/// - held snapshots (`snapfs hold`) are always kept, and are left out before the rules are
///   applied: they neither fill a `keepLast` place nor stand for their period;
/// - the newest snapshot is never removed;
/// - with no rule set, nothing is removed.
///
/// `keepCommits N` bounds the snapshots taken at SQLite commits: the newest N of each
/// database are kept. It keeps like the other rules; when it is the only rule, snapshots
/// not taken at a commit are all kept. `snapfs mount` sets it to ``defaultKeepCommits``
/// when no rule is given, so that commits (which any user can make) never pile up
/// snapshots without bound.
public struct RetentionPolicy: Equatable, Sendable {
    public var keepLast: Int?
    public var keepHourly: Int?
    public var keepDaily: Int?
    public var keepWeekly: Int?
    public var keepMonthly: Int?
    /// The newest N snapshots taken at SQLite commits of each database.
    public var keepCommits: Int?

    /// The commit snapshots of each database a mount keeps when no retention rule is given.
    public static let defaultKeepCommits = 100

    public init(keepLast: Int? = nil, keepHourly: Int? = nil, keepDaily: Int? = nil,
                keepWeekly: Int? = nil, keepMonthly: Int? = nil, keepCommits: Int? = nil) {
        self.keepLast = keepLast
        self.keepHourly = keepHourly
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
        self.keepMonthly = keepMonthly
        self.keepCommits = keepCommits
    }

    /// True when no rule is on: ``prune(_:)`` then keeps everything.
    public var isEmpty: Bool { !hasGeneralRule && (keepCommits ?? 0) <= 0 }

    /// A rule other than `keepCommits` is on: it governs every snapshot.
    public var hasGeneralRule: Bool {
        [keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly].contains { ($0 ?? 0) > 0 }
    }

    /// Splits `snapshots` into those the rules keep and those to remove, each list oldest
    /// first. The input may be in any order; ties in time are broken by name byte order.
    public func prune(_ snapshots: [(name: String, timeMs: Int64, held: Bool)]) -> (keep: [String], remove: [String]) {
        prune(grouped: snapshots.map { ($0.name, $0.timeMs, $0.held, nil) })
    }

    /// As ``prune(_:)``, where `database` names the database a snapshot was taken at a
    /// commit of (nil: not at a commit), for `keepCommits`.
    public func prune(grouped snapshots: [(name: String, timeMs: Int64, held: Bool, database: String?)]) -> (keep: [String], remove: [String]) {
        let newestFirst = snapshots.sorted {
            $0.timeMs != $1.timeMs ? $0.timeMs > $1.timeMs : $1.name.utf8.lexicographicallyPrecedes($0.name.utf8)
        }
        guard !isEmpty, !newestFirst.isEmpty else {
            return (newestFirst.reversed().map(\.name), [])
        }
        var kept: Set<Int> = [0]  // indices into newestFirst; the newest always stays
        let candidates = newestFirst.indices.filter { !newestFirst[$0].held }
        for index in newestFirst.indices where newestFirst[index].held { kept.insert(index) }
        if let count = keepCommits, count > 0 {
            var seen: [String: Int] = [:]
            for index in candidates {
                guard let database = newestFirst[index].database else {
                    // Alone, the commit rule says nothing of other snapshots: they stay.
                    if !hasGeneralRule { kept.insert(index) }
                    continue
                }
                let rank = seen[database, default: 0]
                if rank < count { kept.insert(index) }
                seen[database] = rank + 1
            }
        }

        if let count = keepLast, count > 0 {
            kept.formUnion(candidates.prefix(count))
        }
        // A period rule walks newest first and keeps the first snapshot of each new period.
        func keepNewestPerPeriod(_ count: Int?, period: (UTCTime) -> Int64) {
            guard let count, count > 0 else { return }
            var lastPeriod: Int64?
            var periods = 0
            for index in candidates {
                let key = period(Self.utc(newestFirst[index].timeMs))
                if key == lastPeriod { continue }
                lastPeriod = key
                kept.insert(index)
                periods += 1
                if periods == count { break }
            }
        }
        keepNewestPerPeriod(keepHourly) { $0.hourNumber }
        keepNewestPerPeriod(keepDaily) { $0.dayNumber }
        keepNewestPerPeriod(keepWeekly) { $0.isoWeekStart }
        keepNewestPerPeriod(keepMonthly) { Int64($0.monthNumber) }

        var keep: [String] = []
        var remove: [String] = []
        for index in newestFirst.indices.reversed() {
            if kept.contains(index) { keep.append(newestFirst[index].name) } else { remove.append(newestFirst[index].name) }
        }
        return (keep, remove)
    }

    /// Times outside the range of snapshot names are clamped into it, so that a damaged
    /// entry still falls into some period instead of trapping.
    private static func utc(_ timeMs: Int64) -> UTCTime {
        UTCTime(milliseconds: min(max(timeMs, 0), UTCTime.latestMilliseconds))!
    }
}

extension RetentionPolicy: CustomStringConvertible {
    /// The rules that are on, as `-o` options (`keep_last=20 keep_commits=100`).
    public var description: String {
        let rules = [("keep_last", keepLast), ("keep_hourly", keepHourly), ("keep_daily", keepDaily),
                     ("keep_weekly", keepWeekly), ("keep_monthly", keepMonthly), ("keep_commits", keepCommits)]
        return rules.compactMap { rule in rule.1.flatMap { $0 > 0 ? "\(rule.0)=\($0)" : nil } }.joined(separator: " ")
    }
}
