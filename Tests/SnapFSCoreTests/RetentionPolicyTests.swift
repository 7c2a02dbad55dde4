@testable import SnapFSCore
@testable import SnapFSSnapshots
import Testing

private func ms(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0) -> Int64 {
    UTCTime(year: year, month: month, day: day, hour: hour, minute: minute, second: 0, millisecond: 0)!.milliseconds
}

private func name(_ time: Int64) -> String { try! SnapshotName(timeMs: time).description }

@Suite struct RetentionPolicyTests {
    typealias Item = (name: String, timeMs: Int64, held: Bool)

    /// One snapshot every 10 minutes from 2026-01-01T00:00Z up to 2026-03-31T23:50Z
    /// (90 days, 12,960 snapshots). The newest, 2026-03-31, is a Tuesday.
    static let everyTenMinutes: [Item] = {
        let start = ms(2026, 1, 1)
        return (0..<(90 * 144)).map { i in
            let time = start + Int64(i) * 600_000
            return (name(time), time, false)
        }
    }()

    func survivors(_ policy: RetentionPolicy, _ items: [Item] = everyTenMinutes) -> [String] {
        let result = policy.prune(items)
        #expect(result.keep.count + result.remove.count == items.count)
        #expect(Set(result.keep).isDisjoint(with: result.remove))
        return result.keep
    }

    @Test func keepLast() {
        let kept = survivors(RetentionPolicy(keepLast: 5))
        #expect(kept == [ms(2026, 3, 31, 23, 10), ms(2026, 3, 31, 23, 20), ms(2026, 3, 31, 23, 30),
                         ms(2026, 3, 31, 23, 40), ms(2026, 3, 31, 23, 50)].map(name))
    }

    @Test func keepHourlyKeepsTheNewestOfEachRecentHour() {
        let kept = survivors(RetentionPolicy(keepHourly: 24))
        #expect(kept == (0..<24).map { name(ms(2026, 3, 31, $0, 50)) })
    }

    @Test func keepDaily() {
        let kept = survivors(RetentionPolicy(keepDaily: 7))
        #expect(kept == (25...31).map { name(ms(2026, 3, $0, 23, 50)) })
    }

    @Test func keepWeeklyUsesISOWeeks() {
        // Weeks start on Monday: the current week (Mon 30 Mar .. ) ends at the newest
        // snapshot, the previous ones at Sunday 23:50.
        let kept = survivors(RetentionPolicy(keepWeekly: 4))
        #expect(kept == [ms(2026, 3, 15, 23, 50), ms(2026, 3, 22, 23, 50), ms(2026, 3, 29, 23, 50),
                         ms(2026, 3, 31, 23, 50)].map(name))
    }

    @Test func keepMonthlyCountsOnlyMonthsWithSnapshots() {
        // Twelve months asked, three have snapshots.
        let kept = survivors(RetentionPolicy(keepMonthly: 12))
        #expect(kept == [ms(2026, 1, 31, 23, 50), ms(2026, 2, 28, 23, 50), ms(2026, 3, 31, 23, 50)].map(name))
    }

    @Test func rulesCombineAsAUnion() {
        let policy = RetentionPolicy(keepLast: 3, keepHourly: 24, keepDaily: 7, keepWeekly: 4, keepMonthly: 12)
        let kept = survivors(policy)
        // last 3: 23:30 23:40 23:50 on 31 Mar; hourly adds 00:50 .. 22:50 (23); daily adds 25..30 Mar
        // (6); weekly adds 15 and 22 Mar (29 Mar is a daily already); monthly adds 31 Jan, 28 Feb.
        #expect(kept.count == 3 + 23 + 6 + 2 + 2)
        #expect(Set(kept) == Set(survivors(RetentionPolicy(keepLast: 3)) + survivors(RetentionPolicy(keepHourly: 24))
                                 + survivors(RetentionPolicy(keepDaily: 7)) + survivors(RetentionPolicy(keepWeekly: 4))
                                 + survivors(RetentionPolicy(keepMonthly: 12))))
        #expect(kept == kept.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
    }

    @Test func noRuleRemovesNothing() {
        for policy in [RetentionPolicy(), RetentionPolicy(keepLast: 0, keepHourly: 0, keepDaily: nil, keepWeekly: 0, keepMonthly: 0)] {
            #expect(policy.isEmpty)
            let result = policy.prune(Self.everyTenMinutes)
            #expect(result.remove.isEmpty)
            #expect(result.keep == Self.everyTenMinutes.map(\.name))
        }
        #expect(RetentionPolicy().prune([]) == ([], []))
    }

    @Test func heldSnapshotsAreKeptAndDoNotCount() {
        var items = Self.everyTenMinutes
        // Hold the oldest, and the newest of 31 Mar's 22:xx hour.
        items[0].held = true
        let heldHour = items.firstIndex { $0.timeMs == ms(2026, 3, 31, 22, 50) }!
        items[heldHour].held = true
        let kept = survivors(RetentionPolicy(keepHourly: 2), items)
        // The held 22:50 does not stand for its hour: 22:40 does.
        #expect(kept == [items[0].name, name(ms(2026, 3, 31, 22, 40)), items[heldHour].name,
                         name(ms(2026, 3, 31, 23, 50))])
        // A held snapshot does not fill a keepLast place.
        let last = survivors(RetentionPolicy(keepLast: 2), items)
        #expect(last == [items[0].name, items[heldHour].name, name(ms(2026, 3, 31, 23, 40)),
                         name(ms(2026, 3, 31, 23, 50))])
    }

    @Test func theNewestIsNeverRemoved() {
        let newest = Self.everyTenMinutes.last!.name
        for _ in 0..<50 {
            var items = Self.everyTenMinutes.shuffled().prefix(Int.random(in: 1...300)).map { $0 }
            for i in items.indices { items[i].held = Int.random(in: 0..<10) == 0 }
            let policy = RetentionPolicy(keepLast: Int.random(in: 0...3), keepHourly: Int.random(in: 0...3),
                                         keepDaily: Int.random(in: 0...3), keepWeekly: Int.random(in: 0...3),
                                         keepMonthly: Int.random(in: 0...3))
            let newestHere = items.max { $0.timeMs < $1.timeMs }!.name
            let result = policy.prune(items)
            #expect(result.keep.last == newestHere)
            #expect(!result.remove.contains(newestHere))
            // Held ones always survive.
            #expect(items.filter(\.held).allSatisfy { result.keep.contains($0.name) })
        }
        let single: [Item] = [(newest, Self.everyTenMinutes.last!.timeMs, false)]
        #expect(RetentionPolicy(keepHourly: 1).prune(single) == ([newest], []))
    }

    @Test func inputOrderDoesNotMatter() {
        let policy = RetentionPolicy(keepLast: 2, keepDaily: 3, keepMonthly: 2)
        let ordered = policy.prune(Self.everyTenMinutes)
        let shuffled = policy.prune(Self.everyTenMinutes.shuffled())
        #expect(ordered.keep == shuffled.keep)
        #expect(ordered.remove == shuffled.remove)
    }

    @Test func periodsWithoutSnapshotsAreSkipped() {
        // One snapshot on each of 1, 5 and 20 Jan and two on 21 Jan.
        let times = [ms(2026, 1, 1, 12), ms(2026, 1, 5, 9), ms(2026, 1, 20, 8),
                     ms(2026, 1, 21, 1), ms(2026, 1, 21, 2)]
        let items: [Item] = times.map { (name($0), $0, false) }
        #expect(survivors(RetentionPolicy(keepDaily: 3), items) == [times[1], times[2], times[4]].map(name))
    }
}
