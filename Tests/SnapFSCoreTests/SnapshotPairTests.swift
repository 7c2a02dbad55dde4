import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import Testing

@Suite struct SnapshotPairTests {
    static func name(_ ms: Int64, _ label: String? = nil) -> SnapshotName { try! SnapshotName(timeMs: ms, label: label) }

    static func entry(_ ms: Int64, _ label: String?, pair: SnapshotPair?) -> SnapshotEntry {
        let name = name(ms, label)
        return SnapshotEntry(name: name, metadata: SnapshotMetadata(name: name, trigger: Trigger(kind: .command, pair: pair),
                                                                    strategy: "hardlink"))
    }

    @Test func theControlFileArgumentRoundTrips() throws {
        #expect(SnapshotPair(argument: "pre") == SnapshotPair(role: .pre))
        let pre = Self.name(1_795_605_753_456, "job").description
        let post = try #require(SnapshotPair(argument: "post:" + pre))
        #expect(post == SnapshotPair(role: .post, pre: pre))
        #expect(post.argument == "post:" + pre && SnapshotPair(role: .pre).argument == "pre")
        for bad in ["", "post", "post:", "post:job", "pre:x", "middle", "POST:" + pre] {
            #expect(SnapshotPair(argument: bad) == nil, "\(bad)")
        }
    }

    @Test func theControlCommandCarriesThePairInItsTrigger() throws {
        let pre = Self.name(1_795_605_753_456, "job").description
        #expect(try ControlCommand.parse(Array("snapshot --force --pair=post:\(pre) --trigger=command job".utf8))
            == .snapshot(label: "job", force: true, trigger: Trigger(kind: .command, pair: SnapshotPair(role: .post, pre: pre))))
        #expect(try ControlCommand.parse(Array("snapshot --pair=pre".utf8))
            == .snapshot(label: nil, force: false, trigger: Trigger(kind: .control, pair: SnapshotPair(role: .pre))))
        for bad in ["snapshot --pair=", "snapshot --pair=post:nope", "snapshot --pair"] {
            #expect(throws: ControlCommand.ParseError.self, "\(bad)") { try ControlCommand.parse(Array(bad.utf8)) }
        }
    }

    @Test func theMetadataTakesThePairFromTheTriggerWithItsOwnName() throws {
        let pre = Self.name(1000, "job")
        let post = Self.name(2000, "job")
        let first = SnapshotMetadata(name: pre, trigger: Trigger(kind: .command, pair: SnapshotPair(role: .pre)), strategy: "copy")
        #expect(first.pair == SnapshotPair(role: .pre, pre: pre.description, post: nil))
        #expect(first.trigger == Trigger(kind: .command))  // stored beside the trigger, not in it
        let second = SnapshotMetadata(name: post, trigger: Trigger(kind: .command, pair: SnapshotPair(role: .post, pre: pre.description)),
                                      strategy: "copy")
        #expect(second.pair == SnapshotPair(role: .post, pre: pre.description, post: post.description))
        let text = String(decoding: first.encoded(), as: UTF8.self)
        #expect(text.contains(#""role" : "pre""#) && text.contains(#""post" : null"#))
        #expect(SnapshotMetadata.decode(first.encoded()) == first)
        #expect(SnapshotMetadata.decode(second.encoded()) == second)
        // Metadata written before pairs existed reads as no pair.
        let old = Array(#"{"name": "19700101T000001.000Z", "trigger": {"kind": "command"}}"#.utf8)
        #expect(try #require(SnapshotMetadata.decode(old)).pair == nil)
    }

    @Test func pairsAreFoundByLabelOrNameAndListedComplete() throws {
        let a = Self.name(1000, "job").description, c = Self.name(3000, "job").description
        let entries = [
            Self.entry(1000, "job", pair: SnapshotPair(role: .pre)),
            Self.entry(1500, nil, pair: nil),
            Self.entry(2000, "job", pair: SnapshotPair(role: .post, pre: a)),
            Self.entry(3000, "job", pair: SnapshotPair(role: .pre)),              // its command still runs
            Self.entry(4000, "other", pair: SnapshotPair(role: .post, pre: Self.name(500).description)),  // its pre is gone
        ]
        let pairs = SnapshotPair.pairs(in: entries)
        #expect(pairs.map { [$0.pre.name.timeMs, $0.post?.name.timeMs ?? -1] } == [[1000, 2000], [3000, -1]])
        // By label: the newest pair, even without its post.
        let newest = try #require(SnapshotPair.find("job", in: entries))
        #expect(newest.pre.name.description == c && newest.post == nil)
        // By the name of either snapshot.
        #expect(SnapshotPair.find(Self.name(2000, "job").description, in: entries)?.pre.name.description == a)
        #expect(SnapshotPair.find(a, in: entries)?.post?.name.timeMs == 2000)
        #expect(SnapshotPair.find("other", in: entries) == nil)
        #expect(SnapshotPair.find(Self.name(1500).description, in: entries) == nil)
        let listed = SnapshotPair.completed(entries)
        #expect(listed.map(\.pair?.post) == [Self.name(2000, "job").description, nil, Self.name(2000, "job").description, nil,
                                            Self.name(4000, "other").description])
    }

    @Test func theMeterReportsAtMostOncePerInterval() {
        var now: Int64 = 0
        var reported: [Int] = []
        let meter = ProgressMeter(intervalMilliseconds: 100, clock: { now }) { reported.append($0) }
        for _ in 0..<1000 { meter.tick(); now += 1000 }  // an entry per millisecond, for a second
        #expect(meter.count == 1000)
        #expect(reported.count == 9 || reported.count == 10)
        #expect(reported.first == 101 && reported == reported.sorted())  // the 101st entry, 100 ms after the start
        let quick = ProgressMeter(intervalMilliseconds: 100, clock: { 0 }) { _ in Issue.record("a short walk reports nothing") }
        for _ in 0..<10_000 { quick.tick() }
        #expect(quick.reports == 0 && quick.count == 10_000)
    }

    @Test func diffAndRestoreTickForEveryEntry() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let old = TreeBuilder(root: dir.directory("old"))
        let new = TreeBuilder(root: dir.directory("new"))
        old.directory("d")
        for i in 0..<20 { old.file("d/f\(i)", "\(i)") }
        old.file("top", "t")
        new.directory("d")
        new.file("d/f0", "changed")
        new.directory("d/gone")
        new.file("d/gone/x", "x")
        let meter = ProgressMeter(clock: { 0 }) { _ in }
        let differences = try TreeDiff().compare(oldPath: old.root, newPath: new.root, progress: meter)
        // d, d/f0…d/f19, d/gone, d/gone/x, top: every name on either side once.
        #expect(meter.count == 24 && differences.count == 23)
        let restoring = ProgressMeter(clock: { 0 }) { _ in }
        let summary = try TreeRestore(progress: restoring).restore(from: old.root, to: new.root, paths: [""])
        // The 22 entries of the source, and d/gone removed (one entry, with what is below it).
        #expect(restoring.count == 23 && summary.removed == 1)
    }
}
