import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// The engine with the core filesystem, without a mount (no kernel to push pages from).
@Suite struct SnapshotEngineTests {
    let root = InodeTable.rootID
    let me = RequestContext.daemon

    func make(_ dir: TemporaryDirectory, strategy: SnapshotStrategy = .hardlink,
              retention: RetentionPolicy = RetentionPolicy()) throws -> (SnapFileSystem, SnapshotEngine) {
        let state = SnapshotState()
        let fs = try SnapFileSystem(backingPath: dir.path, snapshotState: state)
        var options = SnapshotOptions()
        options.strategy = strategy
        options.retention = retention
        let engine = try SnapshotEngine(backingPath: dir.path, state: state, options: options)
        fs.attach(engine)
        return (fs, engine)
    }

    func created(_ outcome: SnapshotOutcome) -> SnapshotMetadata? {
        if case let .created(metadata) = outcome { return metadata }
        return nil
    }

    @Test func aSnapshotHoldsTheTreeAndItsMetadataAndLaterWritesDoNotReachIt() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (fs, engine) = try make(dir)
        #expect(fs.snapshotState.sharesBackingObjects)
        let (_, file) = try fs.create(parent: root, name: "f", mode: 0o644, flags: O_RDWR, context: me)
        _ = try Array("one".utf8).withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
        let metadata = try #require(created(try engine.take(label: "first", trigger: Trigger(kind: .command))))
        #expect(metadata.name.hasSuffix("-first"))
        #expect(metadata.files == 1 && metadata.strategy == "hardlink" && metadata.bytes == 3)
        #expect(readFile(dir.path + "/.snapshots/\(metadata.name)/f") == "one")
        #expect(access(dir.path + "/.snapshots/\(metadata.name)/.snapshots", F_OK) != 0)
        let json = try #require(readFile(dir.path + "/.snapshots/.meta/\(metadata.name).json"))
        #expect(json.contains("\"trigger\""))
        _ = try Array("TWO".utf8).withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
        #expect(readFile(dir.path + "/.snapshots/\(metadata.name)/f") == "one")
        #expect(readFile(dir.path + "/f") == "TWO")
    }

    @Test func unchangedTreesMakeNoSnapshotUnlessForced() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (fs, engine) = try make(dir, strategy: .copy)
        _ = try fs.mkdir(parent: root, name: "d", mode: 0o755, context: me)
        let first = try #require(created(try engine.take(label: nil, trigger: Trigger(kind: .control))))
        #expect(try engine.take(label: nil, trigger: Trigger(kind: .control)) == .unchanged(newest: first.name))
        let forced = try #require(created(try engine.take(label: nil, trigger: Trigger(kind: .control), force: true)))
        #expect(forced.name > first.name)
        _ = try fs.mkdir(parent: root, name: "e", mode: 0o755, context: me)
        #expect(created(try engine.take(label: nil, trigger: Trigger(kind: .control))) != nil)
    }

    @Test func deleteHoldReleaseAndRetention() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (_, engine) = try make(dir, strategy: .copy, retention: RetentionPolicy(keepLast: 2))
        var names: [String] = []
        for _ in 0..<3 {
            names.append(try #require(created(try engine.take(label: nil, trigger: Trigger(kind: .control), force: true))).name)
        }
        // keep-last 2 pruned the first after the third.
        #expect(try engine.catalog.list().map(\.name.description) == Array(names[1...]))
        try engine.setHeld(true, names[1])
        #expect(throws: SnapshotFailure.self) { try engine.delete(names[1]) }
        names.append(try #require(created(try engine.take(label: nil, trigger: Trigger(kind: .control), force: true))).name)
        // Held ones survive pruning and do not count.
        #expect(try engine.catalog.list().map(\.name.description) == [names[1], names[2], names[3]])
        try engine.setHeld(false, names[1])
        try engine.delete(names[1])
        #expect(access(dir.path + "/.snapshots/\(names[1])", F_OK) != 0)
        #expect(access(dir.path + "/.snapshots/.meta/\(names[1]).json", F_OK) != 0)
        #expect(throws: SnapshotFailure.self) { try engine.delete("20990101T000000.000Z") }
    }

    @Test func theControlFileCarriesCommandsAndReportsOutcomes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (_, engine) = try make(dir, strategy: .copy)
        let session = ControlSession()
        func send(_ text: String) throws -> Int {
            try Array(text.utf8).withUnsafeBytes { buffer in try engine.controlWrite(session, buffer) }
        }
        func result() -> String {
            String(decoding: engine.controlRead(session, offset: 0, size: 4096), as: UTF8.self)
        }
        #expect(result().hasPrefix("result: none\n"))
        #expect(try send("snapshot tag\n") == 13)
        #expect(result().hasPrefix("result: ok snapshot "))
        #expect(result().contains("\nsnapshots: 1\n"))
        #expect(throws: Errno.invalidArgument) { try send("snapshot a/b") }
        #expect(result().hasPrefix("result: error EINVAL "))
        #expect(throws: Errno.noSuchFileOrDirectory) { try send("hold nothing") }
        #expect(result().hasPrefix("result: error ENOENT no snapshot named nothing"))
        let whole = engine.controlRead(session, offset: 0, size: 4096)
        #expect(engine.controlRead(session, offset: 5, size: 3) == Array(whole[5..<8]))
        #expect(engine.controlRead(session, offset: Int64(whole.count), size: 10).isEmpty)
    }
}
