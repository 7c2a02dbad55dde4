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
/// - with no rule set, nothing is removed (an unconfigured mount keeps everything).
public struct RetentionPolicy: Equatable, Sendable {
    public var keepLast: Int?
    public var keepHourly: Int?
    public var keepDaily: Int?
    public var keepWeekly: Int?
    public var keepMonthly: Int?

    public init(keepLast: Int? = nil, keepHourly: Int? = nil, keepDaily: Int? = nil,
                keepWeekly: Int? = nil, keepMonthly: Int? = nil) {
        self.keepLast = keepLast
        self.keepHourly = keepHourly
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
        self.keepMonthly = keepMonthly
    }

    /// True when no rule is on: ``prune(_:)`` then keeps everything.
    public var isEmpty: Bool {
        [keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly].allSatisfy { ($0 ?? 0) <= 0 }
    }

    /// Splits `snapshots` into those the rules keep and those to remove, each list oldest
    /// first. The input may be in any order; ties in time are broken by name byte order.
    public func prune(_ snapshots: [(name: String, timeMs: Int64, held: Bool)]) -> (keep: [String], remove: [String]) {
        let newestFirst = snapshots.sorted {
            $0.timeMs != $1.timeMs ? $0.timeMs > $1.timeMs : $1.name.utf8.lexicographicallyPrecedes($0.name.utf8)
        }
        guard !isEmpty, !newestFirst.isEmpty else {
            return (newestFirst.reversed().map(\.name), [])
        }
        var kept: Set<Int> = [0]  // indices into newestFirst; the newest always stays
        let candidates = newestFirst.indices.filter { !newestFirst[$0].held }
        for index in newestFirst.indices where newestFirst[index].held { kept.insert(index) }

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
