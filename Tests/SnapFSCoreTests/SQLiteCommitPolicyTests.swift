import Glibc
@testable import SnapFSBacking
@testable import SnapFSCore
@testable import SnapFSDaemon
@testable import SnapFSSQLite
@testable import SnapFSSnapshots
import Synchronization
import Testing

/// Which commits get a snapshot: the detector's `decide`, with times and snapshot costs
/// given by the test (microseconds on the monotonic clock).
@Suite struct SQLiteCommitPolicyTests {
    private func commit() throws -> SQLiteCommit {
        // The policy never looks into the location; any directory inode will do.
        SQLiteCommit(location: DatabaseLocation(directory: try SQLiteCommitPolicyTests.someInode(), name: Array("db".utf8)), mode: .delete)
    }

    static func someInode() throws -> Inode {
        let dir = TemporaryDirectory()
        let fs = try SnapFileSystem(backingPath: dir.path)
        return fs.inodes.root
    }

    private func detector(_ interval: SQLiteOptions.MinInterval, strategy: SnapshotStrategy? = nil) -> SQLiteCommitDetector {
        var options = SQLiteOptions()
        options.minInterval = interval
        let detector = SQLiteCommitDetector(options: options)
        if let strategy { detector.policy.useAutoFloor(ms: strategy.commitSnapshotFloorMs) }
        return detector
    }

    /// Commits every `everyUs` from `startUs` for `forUs`; each snapshot taken costs the
    /// application `costUs` (noted as the filesystem notes it, after the build). Returns
    /// how many commits there were, and the times of those snapshotted at once.
    @discardableResult
    private func commits(_ detector: SQLiteCommitDetector, _ c: SQLiteCommit, from startUs: Int64 = 1_000_000,
                         every everyUs: Int64, for forUs: Int64, costUs: Int64) -> (count: Int, snapshotted: [Int64]) {
        var snapshotted: [Int64] = []
        var count = 0
        var now = startUs
        while now < startUs + forUs {
            count += 1
            if detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: now) == .snapshot {
                snapshotted.append(now)
                detector.policy.noteCost(costUs, of: "db")
                now += costUs   // the commit waits for its snapshot
            }
            now += everyUs
        }
        return (count, snapshotted)
    }

    @Test func autoIsTheDefault() {
        #expect(SQLiteOptions().minInterval == .auto)
        #expect(MountOptions([]).sqlite.minInterval == .auto)
        #expect(MountOptions(["sqlite_min_interval=auto"]).sqlite.minInterval == .auto)
        #expect(MountOptions(["sqlite_min_interval=0"]).sqlite.minInterval == .fixed(0))
        #expect(MountOptions(["sqlite_min_interval=1s"]).sqlite.minInterval == .fixed(1000))
        #expect(MountOptions(["sqlite_min_interval=250ms"]).sqlite.minInterval == .fixed(250))
        #expect(!MountOptions(["sqlite_min_interval=soon"]).problems.isEmpty)
        #expect(!MountOptions(["sqlite_min_interval=-1"]).problems.isEmpty)
    }

    @Test func rollbacksLeaveTheFileAsItWas() throws {
        let detector = detector(.fixed(0))
        let c = try commit()
        #expect(detector.policy.decide(c, path: "db", fingerprint: [1, 10, 0, 4096], nowUs: 0) == .snapshot)
        #expect(detector.policy.decide(c, path: "db", fingerprint: [1, 10, 0, 4096], nowUs: 1) == .rollback)
        // EXCLUSIVE locking keeps the counter, but the file's mtime moves at a commit.
        #expect(detector.policy.decide(c, path: "db", fingerprint: [1, 10, 5, 4096], nowUs: 2) == .snapshot)
        #expect(detector.policy.rollbacks.load(ordering: .relaxed) == 1)
        #expect(detector.policy.commits.load(ordering: .relaxed) == 2)
    }

    @Test func aFixedIntervalDefersAndHandsOverTheLastCommit() throws {
        let detector = detector(.fixed(1000))
        let c = try commit()
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 10_000_000) == .snapshot)
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 10_300_000) == .deferred)
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 10_600_000) == .deferred)
        // Handed over when the interval and the grace for a later commit have passed.
        let grace = SQLiteCommitPolicy.trailingGraceUs
        #expect(detector.policy.nextDueUs == 11_000_000 + grace)
        #expect(detector.policy.dueCommits(nowUs: 11_000_000 + grace - 1).isEmpty)
        #expect(detector.policy.dueCommits(nowUs: 11_000_000 + grace).count == 1)
        #expect(detector.policy.dueCommits(nowUs: 12_500_000).isEmpty)   // handed over once
        #expect(detector.policy.nextDueUs == nil)
        // A commit after the interval is snapshotted at once.
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 12_100_000) == .snapshot)
    }

    @Test func zeroIsEveryCommitWhateverTheCost() throws {
        let detector = detector(.fixed(0), strategy: .hardlink)
        let c = try commit()
        // 100 commits 1 ms apart, each snapshot costing 300 ms.
        let run = commits(detector, c, every: 1000, for: 30_100_000, costUs: 300_000)
        #expect(run.count == 100 && run.snapshotted.count == 100)
        #expect(detector.policy.deferred.load(ordering: .relaxed) == 0)
    }

    @Test func autoSnapshotsEveryCommitWhileSnapshotsAreCheap() throws {
        // Reflinks: a floor of 100 ms. Commits 120 ms apart, snapshots costing 2 ms: each
        // gets one.
        let detector = detector(.auto, strategy: .reflink)
        let c = try commit()
        let run = commits(detector, c, every: 120_000, for: 6_000_000, costUs: 2000)
        #expect(run.count > 40 && run.snapshotted.count == run.count)
        #expect(detector.policy.deferred.load(ordering: .relaxed) == 0)
        // Commits 7 ms apart: one snapshot per 100 ms, at the first commit after it.
        let fast = self.detector(.auto, strategy: .btrfs)
        let taken = commits(fast, c, every: 7000, for: 1_000_000, costUs: 2000).snapshotted
        let gaps = zip(taken.dropFirst(), taken).map { $0 - $1 }
        #expect(taken.count == 10)
        #expect(gaps.allSatisfy { $0 >= 100_000 && $0 < 109_000 }, "\(gaps)")
    }

    @Test func autoThrottlesWhenSnapshotsCostMore() throws {
        // Reflinks, commits every 1 ms, snapshots costing 50 ms: one snapshot per 150 ms
        // (above the floor), so the application spends about a third of its time in them.
        let detector = detector(.auto, strategy: .reflink)
        let c = try commit()
        let taken = commits(detector, c, every: 1000, for: 6_000_000, costUs: 50_000).snapshotted
        let gaps = zip(taken.dropFirst(), taken).map { $0 - $1 }
        #expect(gaps.allSatisfy { $0 >= 150_000 && $0 <= 151_000 }, "\(gaps)")
        let spent = Double(taken.count * 50_000) / 6_000_000
        #expect(spent > 0.3 && spent < 0.36, "\(spent)")
        #expect(detector.policy.deferred.load(ordering: .relaxed) > 3500)
    }

    @Test func autoKeepsTheFloorWhereSnapshotsCopy() throws {
        // Hard links: cheap snapshots (1 ms) still at most one a second.
        let detector = detector(.auto, strategy: .hardlink)
        let c = try commit()
        let taken = commits(detector, c, every: 2000, for: 10_000_000, costUs: 1000).snapshotted
        let gaps = zip(taken.dropFirst(), taken).map { $0 - $1 }
        #expect(taken.count == 10)
        #expect(gaps.allSatisfy { $0 >= 1_000_000 && $0 < 1_004_000 }, "\(gaps)")
        // Before the engine tells the strategy, the floor is that of a copy.
        #expect(self.detector(.auto).policy.autoFloorUs.load(ordering: .relaxed) == 1_000_000)
    }

    @Test func aCopyUpPaidLaterCountsAsTheSnapshotsCost() throws {
        // Hard links: the snapshot (a link) costs 0.1 ms at the commit, and the next write
        // pays 700 ms copying the database up: the interval is 3 × 700.1 ms, not the floor.
        let detector = detector(.auto, strategy: .hardlink)
        let c = try commit()
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 0) == .snapshot)
        detector.policy.noteCost(100, of: "db")
        detector.policy.noteCost(700_000, of: "db")   // at the next commit, before its decision
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 1_500_000) == .deferred)
        #expect(detector.policy.nextDueUs == 2_100_300 + SQLiteCommitPolicy.trailingGraceUs)
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 2_100_300) == .snapshot)
        // The new snapshot's cost starts from nothing: once cheap, the floor again.
        detector.policy.noteCost(100, of: "db")
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 3_100_300) == .snapshot)
    }

    @Test func theFinalStateAlwaysFollows() throws {
        // Whatever the policy, the last of a burst of deferred commits is handed over when
        // its interval ends, once, as the newest commit; nothing is left pending.
        for (interval, strategy, cost) in [(SQLiteOptions.MinInterval.auto, SnapshotStrategy.reflink, Int64(5000)),
                                           (.auto, .hardlink, 200_000), (.fixed(500), .reflink, 100)] {
            let detector = detector(interval, strategy: strategy)
            let c = try commit()
            var last = c
            let taken = commits(detector, c, every: 500, for: 2_000_000, costUs: cost).snapshotted
            last.mode = .truncate   // tells the newest commit from the others
            #expect(detector.policy.decide(last, path: "db", fingerprint: nil, nowUs: taken.last! + cost + 1) == .deferred)
            let due = try #require(detector.policy.nextDueUs)
            let interval = detector.policy.intervalUs(afterCost: cost)
            #expect(due == taken.last! + interval + SQLiteCommitPolicy.trailingGraceUs)
            #expect(detector.policy.dueCommits(nowUs: due - 1).isEmpty)
            let handed = detector.policy.dueCommits(nowUs: due)
            #expect(handed.count == 1 && handed[0].commit.mode == .truncate && handed[0].path == "db")
            #expect(detector.policy.nextDueUs == nil)
        }
    }

    @Test func aTransactionUnderWayLeavesTheSnapshotToItsCommit() throws {
        // The handed-over commit found the database mid-transaction: the commit that ends
        // it is snapshotted at once; if none comes, the handed-over one is due again soon.
        let detector = detector(.auto, strategy: .hardlink)
        let c = try commit()
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 0) == .snapshot)
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 100) == .deferred)
        let handed = detector.policy.dueCommits(nowUs: 2_000_000)
        #expect(handed.count == 1)
        detector.policy.notYet(handed[0].commit, path: "db", nowUs: 2_000_000)
        #expect(detector.policy.nextDueUs == 2_000_000 + SQLiteCommitPolicy.retryUs)
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 2_000_100) == .snapshot)
        #expect(detector.policy.nextDueUs == nil)
        // No commit came: the one handed over is handed over again.
        #expect(detector.policy.decide(c, path: "db", fingerprint: nil, nowUs: 2_000_200) == .deferred)
        let again = detector.policy.dueCommits(nowUs: 4_000_000)
        detector.policy.notYet(again[0].commit, path: "db", nowUs: 4_000_000)
        #expect(detector.policy.dueCommits(nowUs: 4_000_000 + SQLiteCommitPolicy.retryUs - 1).isEmpty)
        #expect(detector.policy.dueCommits(nowUs: 4_000_000 + SQLiteCommitPolicy.retryUs).count == 1)
    }

    @Test func theDatabasesArePacedApart() throws {
        // One database's costly snapshots do not hold back another's.
        let detector = detector(.auto, strategy: .reflink)
        let c = try commit()
        #expect(detector.policy.decide(c, path: "big.db", fingerprint: nil, nowUs: 0) == .snapshot)
        detector.policy.noteCost(100_000, of: "big.db")
        #expect(detector.policy.decide(c, path: "small.db", fingerprint: nil, nowUs: 0) == .snapshot)
        detector.policy.noteCost(100, of: "small.db")
        #expect(detector.policy.decide(c, path: "big.db", fingerprint: nil, nowUs: 200_000) == .deferred)
        #expect(detector.policy.decide(c, path: "small.db", fingerprint: nil, nowUs: 200_000) == .snapshot)
        #expect(detector.statusLines().contains("sqlite-pending: 1"))
        #expect(detector.statusLines().contains("sqlite-databases: 2"))
        #expect(detector.statusLines().contains("sqlite-interval-now: 300ms"))
    }

    @Test func statusShowsThePolicyInForce() {
        #expect(detector(.auto, strategy: .hardlink).statusLines().contains("sqlite-min-interval: auto (at least 1000ms, and 3× the last snapshot's cost)"))
        #expect(detector(.auto, strategy: .btrfs).statusLines().contains("sqlite-min-interval: auto (at least 100ms, and 3× the last snapshot's cost)"))
        #expect(detector(.fixed(0)).statusLines().contains("sqlite-min-interval: 0 (every commit)"))
        #expect(detector(.fixed(1500)).statusLines().contains("sqlite-min-interval: 1500ms"))
    }

    @Test func globsAndModes() throws {
        var options = SQLiteOptions()
        options.include = ["data/*"]
        options.exclude = ["*.tmp.db"]
        #expect(options.covers("data/app.db"))
        #expect(options.covers("data/sub/app.db"))
        #expect(!options.covers("data/x.tmp.db"))
        #expect(!options.covers("other/app.db"))
        options.mode = .detect
        let detector = SQLiteCommitDetector(options: options)
        #expect(detector.policy.decide(try commit(), path: "data/app.db", fingerprint: nil, nowUs: 0) == .ignore)
        #expect(detector.policy.commits.load(ordering: .relaxed) == 1)
        #expect(!detector.policy.defersCommits)
    }
}

/// The thread that takes the snapshots left to the interval: it runs its body at the
/// deadlines asked for, and at the one the body returns, and sleeps otherwise.
@Suite struct DeadlineThreadTests {
    @Test func runsAtTheDeadlinesAskedForAndReturned() throws {
        let thread = DeadlineThread()
        let runs = Mutex<[Int64]>([])
        // Asked for before the thread starts: kept.
        thread.schedule(atUs: MonotonicClock.microseconds() + 5000)
        thread.start {
            let count = runs.withLock { list in
                list.append(MonotonicClock.microseconds())
                return list.count
            }
            // The first run asks for one more, 20 ms on.
            return count == 1 ? MonotonicClock.microseconds() + 20_000 : nil
        }
        let deadline = MonotonicClock.microseconds() + 5_000_000
        while runs.withLock({ $0.count }) < 2 && MonotonicClock.microseconds() < deadline { usleep(1000) }
        let seen = runs.withLock { $0 }
        #expect(seen.count == 2)
        #expect(seen.count < 2 || seen[1] - seen[0] >= 20_000)
        // Nothing asked for: it sleeps.
        usleep(100_000)
        #expect(runs.withLock { $0.count } == 2)
        thread.schedule(atUs: 0)   // a deadline already past: at once
        while runs.withLock({ $0.count }) < 3 && MonotonicClock.microseconds() < deadline + 5_000_000 { usleep(1000) }
        #expect(runs.withLock { $0.count } == 3)
    }
}
