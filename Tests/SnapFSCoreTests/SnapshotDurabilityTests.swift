import Glibc
@testable import SnapFSBacking
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// Durability of snapshots: the marker, the batch, explicit syncs and recovery at start.
@Suite struct SnapshotDurabilityTests {
    let me = RequestContext.daemon

    func make(_ dir: TemporaryDirectory, delayMs: Int64 = 3_600_000) throws -> (SnapFileSystem, SnapshotEngine) {
        let state = SnapshotState()
        let fs = try SnapFileSystem(backingPath: dir.path, snapshotState: state)
        var options = SnapshotOptions()
        options.strategy = .copy
        options.durableDelayMs = delayMs
        let engine = try SnapshotEngine(backingPath: dir.path, state: state, options: options)
        fs.attach(engine)
        return (fs, engine)
    }

    func take(_ engine: SnapshotEngine, _ trigger: Trigger.Kind = .timer) throws -> String {
        guard case let .created(metadata) = try engine.take(label: nil, trigger: Trigger(kind: trigger), force: true) else {
            throw Errno.ioError
        }
        return metadata.name
    }

    func marker(_ dir: TemporaryDirectory) -> String? {
        readFile(dir.path + "/.snapshots/.meta/durable")
    }

    @Test func theMarkerReadsAsWritten() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        let name = try SnapshotName(timeMs: 1_800_000_000_000)
        #expect(DurabilityMarker.read(metadataFD: fd) == .absent)
        #expect(DurabilityMarker.read(metadataFD: -1) == .absent)
        #expect(DurabilityMarker.Reading.absent.covers(name))
        try DurabilityMarker.write(nil, metadataFD: fd)
        #expect(DurabilityMarker.read(metadataFD: fd) == .through(nil))
        #expect(!DurabilityMarker.Reading.through(nil).covers(name))
        try DurabilityMarker.write(name, metadataFD: fd)
        #expect(DurabilityMarker.read(metadataFD: fd) == .through(name))
        #expect(DurabilityMarker.Reading.through(name).covers(name))
        #expect(!DurabilityMarker.Reading.through(name).covers(try SnapshotName(timeMs: 1_800_000_000_001)))
        #expect(access(dir.path + "/.durable.tmp", F_OK) != 0)
        _ = dir.file("durable", contents: "not a name\n")
        #expect(DurabilityMarker.read(metadataFD: fd) == .unreadable)
        #expect(DurabilityMarker.Reading.unreadable.covers(name))
    }

    @Test func aBatchedSnapshotIsPendingUntilASyncAndAnExplicitOneIsDurableAtOnce() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (_, engine) = try make(dir)
        #expect(marker(dir) == "-\n")
        let first = try take(engine)
        #expect(try engine.catalog.list().map(\.durable) == [false])
        #expect(engine.statusLines().contains("pending-durable: 1"))
        #expect(marker(dir) == "-\n")
        let session = ControlSession()
        _ = try Array("snapshot --force\n".utf8).withUnsafeBytes { try engine.controlWrite(session, $0) }
        let entries = try engine.catalog.list()
        try #require(entries.count == 2)
        #expect(entries[0].name.description == first)
        #expect(entries.map(\.durable) == [true, true])
        #expect(marker(dir) == entries[1].name.description + "\n")
        #expect(engine.statusLines().contains("pending-durable: 0"))
        #expect(entries[0].listed.durable == true)
    }

    @Test func theThreadMakesABatchDurableAfterTheDelay() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (_, engine) = try make(dir, delayMs: 50)
        let names = [try take(engine), try take(engine), try take(engine)]
        var waited = 0
        while marker(dir) != names[2] + "\n" && waited < 200 {
            BackgroundThread.sleep(milliseconds: 20)
            waited += 1
        }
        #expect(marker(dir) == names[2] + "\n")
        #expect(try engine.catalog.list().allSatisfy(\.durable))
    }

    @Test func atStartSnapshotsNewerThanTheMarkerAreRemovedAndNewNamesFollowTheMarker() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var names: [String] = []
        do {
            let (_, engine) = try make(dir)
            names.append(try take(engine))
            try engine.makeDurable()
            names.append(try take(engine))
            names.append(try take(engine))
        }
        #expect(marker(dir) == names[0] + "\n")
        let (_, engine) = try make(dir)
        #expect(try engine.catalog.list().map(\.name.description) == [names[0]])
        #expect(access(dir.path + "/.snapshots/.meta/\(names[1]).json", F_OK) != 0)
        #expect(engine.startNotes.count == 1 && engine.startNotes[0].contains("removing 2 snapshot(s)"))
        #expect(try take(engine) > names[0])
    }

    @Test func aStoreWithoutAMarkerKeepsItsSnapshotsAsDurable() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var names: [String] = []
        do {
            let (_, engine) = try make(dir)
            names = [try take(engine), try take(engine)]
        }
        unlink(dir.path + "/.snapshots/.meta/durable")
        #expect(try SnapshotCatalog(path: dir.path + "/.snapshots").list().map(\.durable) == [true, true])
        let (_, engine) = try make(dir)
        #expect(try engine.catalog.list().map(\.name.description) == names)
        #expect(try engine.catalog.list().allSatisfy(\.durable))
        #expect(marker(dir) == names[1] + "\n")
        #expect(engine.startNotes.first?.contains("made by an earlier snapfs") == true)
    }
}
