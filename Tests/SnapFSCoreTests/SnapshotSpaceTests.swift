import Glibc
@testable import SnapFSCore
@testable import SnapFSDaemon
@testable import SnapFSSnapshots
import Testing

/// The bounds on what snapshots may take: the commit rule of retention and the free space floor.
@Suite struct SnapshotSpaceTests {
    typealias Item = (name: String, timeMs: Int64, held: Bool, database: String?)

    @Test func theCommitRuleKeepsTheNewestOfEachDatabaseAndAloneLeavesOthers() {
        let items: [Item] = [("1", 1, false, "a.db"), ("2", 2, false, "b.db"), ("3", 3, false, nil),
                             ("4", 4, true, "a.db"), ("5", 5, false, "a.db"), ("6", 6, false, "a.db"), ("7", 7, false, "b.db")]
        let alone = RetentionPolicy(keepCommits: 2).prune(grouped: items)
        // a.db: 6 and 5 kept, 4 held, 1 removed; b.db: 7 and 2 kept; 3 is not a commit snapshot.
        #expect(alone.remove == ["1"])
        let withLast = RetentionPolicy(keepLast: 1, keepCommits: 1).prune(grouped: items)
        // keep_last keeps 7; keep_commits keeps 6 and 7; 4 is held; the rest go, 3 too.
        #expect(withLast.keep == ["4", "6", "7"])
        #expect(RetentionPolicy(keepCommits: 0).isEmpty)
        #expect(!RetentionPolicy(keepCommits: 3).hasGeneralRule)
    }

    @Test func aMountBoundsCommitSnapshotsUnlessToldOtherwise() {
        #expect(MountOptions([]).snapshots.retention.keepCommits == RetentionPolicy.defaultKeepCommits)
        #expect(MountOptions(["keep_last=5"]).snapshots.retention.keepCommits == nil)
        #expect(MountOptions(["keep_commits=0"]).snapshots.retention.isEmpty)
        #expect(MountOptions(["keep_commits=7"]).snapshots.retention.keepCommits == 7)
        #expect(MountOptions([]).snapshots.minFree == .default)
        #expect(MountOptions(["min_free=2.5%"]).snapshots.minFree == SpaceFloor(.percent(2.5)))
        #expect(MountOptions(["min_free=2G"]).snapshots.minFree == SpaceFloor(.bytes(2 << 30)))
        for bad in ["min_free=", "min_free=101%", "min_free=-1%", "min_free=x", "min_free=-3"] {
            #expect(MountOptions([bad]).problems.count == 1, "\(bad)")
        }
    }

    @Test func theFloorIsAShareOrASizeOfTheFilesystem() {
        #expect(SpaceFloor(.percent(5)).bytes(ofTotal: 1000) == 50)
        #expect(SpaceFloor(.bytes(300)).bytes(ofTotal: 1000) == 300)
        #expect(SpaceFloor(.bytes(3000)).bytes(ofTotal: 1000) == 1000)
        #expect(SpaceFloor.default.description == "5%")
        #expect(SpaceFloor(parsing: "0")?.bytes(ofTotal: 1000) == 0)
        let root = open("/tmp", O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        #expect(SpaceFloor(.percent(0)).shortfall(on: root, adding: 0, inodes: 0) == nil)
        #expect(SpaceFloor(.percent(100)).shortfall(on: root, adding: 0, inodes: 0) != nil)
        #expect(SpaceFloor(.percent(1)).shortfall(on: root, adding: Int64.max / 2, inodes: 0) != nil)
    }

    @Test func aSnapshotBelowTheFloorIsSkippedAndCounted() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var options = SnapshotOptions()
        options.strategy = .copy
        options.minFree = SpaceFloor(.percent(100))
        let state = SnapshotState()
        let fs = try SnapFileSystem(backingPath: dir.path, snapshotState: state)
        let engine = try SnapshotEngine(backingPath: dir.path, state: state, options: options)
        fs.attach(engine)
        let failure = #expect(throws: SnapshotFailure.self) {
            try engine.take(label: nil, trigger: Trigger(kind: .control), force: true)
        }
        #expect(failure?.errno == .noSpace && failure?.skippedForSpace == true)
        #expect(engine.statusLines().contains("skipped-for-space: 1"))
        #expect(try engine.catalog.list().isEmpty)
    }
}
