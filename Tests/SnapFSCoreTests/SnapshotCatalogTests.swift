import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

@Suite struct SnapshotCatalogTests {
    static let sample = try! SnapshotName(timeMs: 1_795_605_753_456, label: "nightly")

    static func fullMetadata(_ name: SnapshotName = sample) -> SnapshotMetadata {
        SnapshotMetadata(name: name, trigger: Trigger(kind: .sqlite, detail: "app.db"), strategy: "reflink",
                         scope: .files, paths: ["data/app.db", "data/app.db-wal"], files: 123, directories: 10,
                         bytes: 123_456, durationMs: 12.5, held: true,
                         sqlite: SQLiteCommitInfo(database: "data/app.db", journalMode: "wal", sequence: 42, size: 4096))
    }

    @Test func metadataHasTheExactKeysOfTheFormat() throws {
        let metadata = SnapshotMetadata(name: Self.sample, trigger: Trigger(kind: .command), strategy: "hardlink")
        let text = String(decoding: metadata.encoded(), as: UTF8.self)
        // Top-level keys, in sorted order (pretty-printing puts them at two spaces).
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }
            .map { $0.dropFirst(3).prefix { $0 != "\"" } }.map(String.init)
        #expect(keys == ["bytes", "directories", "durationMs", "files", "format", "gateMs", "held", "label", "name",
                         "pair", "paths", "scope", "sqlite", "strategy", "time", "trigger"])
        for line in [#""format" : 1"#, #""name" : "20261125T112233.456Z-nightly""#, #""time" : "2026-11-25T11:22:33.456Z""#,
                     #""label" : "nightly""#, #""kind" : "command""#, #""detail" : null"#, #""strategy" : "hardlink""#,
                     #""scope" : "tree""#, #""held" : false"#, #""sqlite" : null"#, #""durationMs" : 0"#, #""gateMs" : null"#, #""pair" : null"#] {
            #expect(text.contains(line), "\(line)")
        }
        #expect(text.hasPrefix("{\n") && text.hasSuffix("}\n"))
        let unlabelled = SnapshotMetadata(name: try SnapshotName(timeMs: 0), trigger: Trigger(kind: .control), strategy: "copy")
        #expect(String(decoding: unlabelled.encoded(), as: UTF8.self).contains("\"label\" : null"))
    }

    @Test func metadataRoundTrips() throws {
        let metadata = Self.fullMetadata()
        let decoded = try #require(SnapshotMetadata.decode(metadata.encoded()))
        #expect(decoded == metadata)
        let text = String(decoding: metadata.encoded(), as: UTF8.self)
        #expect(text.contains("\"data/app.db\""))  // slashes are not escaped
        #expect(text.contains("\"journalMode\" : \"wal\""))
        let list = SnapshotMetadata.encoded([metadata, metadata])
        #expect(String(decoding: list, as: UTF8.self).hasPrefix("["))
        for kind in Trigger.Kind.allCases {
            var copy = metadata
            copy.trigger = Trigger(kind: kind)
            #expect(SnapshotMetadata.decode(copy.encoded()) == copy)
        }
    }

    @Test func metadataFromElsewhereDecodesLeniently() throws {
        let json = #"{"name": "20261125T112233.456Z", "trigger": {"kind": "future-kind"}, "extra": 1}"#
        let decoded = try #require(SnapshotMetadata.decode(Array(json.utf8)))
        #expect(decoded.trigger.kind == .unknown)
        #expect(decoded.time == "2026-11-25T11:22:33.456Z")
        #expect(decoded.held == false)
        #expect(decoded.sqlite == nil)
        #expect(SnapshotMetadata.decode(Array("not json".utf8)) == nil)
        #expect(SnapshotMetadata.decode(Array(#"{"format": 1}"#.utf8)) == nil)
    }

    @Test func metadataIsWrittenAtomicallyIntoADirectory() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        var metadata = Self.fullMetadata()
        try metadata.write(into: fd)
        #expect(try SnapshotMetadata.read(named: metadata.name, from: fd) == metadata)
        metadata.held = false
        try metadata.write(into: fd, durable: false)
        #expect(try SnapshotMetadata.read(named: metadata.name, from: fd).held == false)
        // Only the final file remains: no temporary left behind.
        #expect(try DirectoryNames.utf8Names(in: fd) == [metadata.name + ".json"])
        #expect(throws: Errno.noSuchFileOrDirectory) { try SnapshotMetadata.read(named: "nope", from: fd) }
        _ = dir.file("bad.json", contents: "{")
        #expect(throws: Errno.invalidArgument) { try SnapshotMetadata.read(named: "bad", from: fd) }
    }

    @Test func catalogListsSnapshotsAndIgnoresStrays() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory(".meta")
        let older = try SnapshotName(timeMs: 1_700_000_000_000)
        let newer = Self.sample
        let noMetadata = try SnapshotName(timeMs: 1_750_000_000_000, label: "bare")
        let badMetadata = try SnapshotName(timeMs: 1_760_000_000_000)
        for name in [newer, older, noMetadata, badMetadata] { _ = dir.directory(name.description) }
        let metaFD = open(dir.path + "/.meta", O_RDONLY | O_DIRECTORY)
        defer { close(metaFD) }
        try Self.fullMetadata(newer).write(into: metaFD)
        try SnapshotMetadata(name: older, trigger: Trigger(kind: .timer), strategy: "hardlink").write(into: metaFD)
        _ = dir.file(".meta/\(badMetadata.description).json", contents: "garbage")
        // Strays: a file with a snapshot's name, non-names, a build in progress, a symlink.
        _ = dir.file("20250101T000000.000Z")
        _ = dir.file("README")
        _ = dir.directory("lost+found")
        _ = dir.directory("20261125T112233.456Z-bad label")
        _ = dir.directory(".building-20270101T000000.000Z")
        _ = dir.directory(".building-20270101T000000.001Z-x")
        symlink(newer.description, dir.path + "/20240101T000000.000Z")
        _ = dir.file(".meta/20240101T000000.000Z.json", contents: "{}")

        let catalog = try SnapshotCatalog(path: dir.path)
        let entries = try catalog.list()
        #expect(entries.map(\.name) == [older, noMetadata, badMetadata, newer])
        #expect(entries[0].metadata?.trigger.kind == .timer)
        #expect(entries[1].metadata == nil)
        #expect(entries[1].metadataOrReconstructed.label == "bare")
        #expect(entries[1].metadataOrReconstructed.trigger.kind == .unknown)
        #expect(entries[2].metadata == nil)
        #expect(entries[3].metadata == Self.fullMetadata(newer))
        #expect(entries.map(\.held) == [false, false, false, true])
        #expect(try catalog.newest()?.name == newer)
        #expect(try catalog.buildingLeftovers() == ["20270101T000000.000Z", "20270101T000000.001Z-x"])

        #expect(catalog.find(older.description)?.metadata?.strategy == "hardlink")
        #expect(catalog.find("20250101T000000.000Z") == nil)  // a file, not a directory
        #expect(catalog.find("20240101T000000.000Z") == nil)  // a symlink
        #expect(catalog.find("README") == nil)
        #expect(catalog.find("20991231T000000.000Z") == nil)
    }

    @Test func holdAndReleaseRewriteTheMetadata() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let name = Self.sample
        _ = dir.directory(name.description)
        let bare = try SnapshotName(timeMs: 1_750_000_000_000)
        _ = dir.directory(bare.description)
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        let catalog = SnapshotCatalog(directoryFD: fd)
        // No .meta yet: it is created.
        var metadata = Self.fullMetadata(name)
        metadata.held = false
        try catalog.writeMetadata(metadata)
        try catalog.setHeld(true, name: name.description)
        #expect(catalog.find(name.description)?.held == true)
        try catalog.setHeld(false, name: name.description)
        let released = try #require(catalog.find(name.description)?.metadata)
        #expect(released == metadata)
        // A snapshot without metadata gets reconstructed metadata.
        try catalog.setHeld(true, name: bare.description)
        #expect(catalog.find(bare.description)?.metadata?.held == true)
        #expect(catalog.find(bare.description)?.metadata?.trigger.kind == .unknown)
        #expect(throws: Errno.noSuchFileOrDirectory) { try catalog.setHeld(true, name: "20991231T000000.000Z") }
        #expect(throws: Errno.noSuchFileOrDirectory) { try catalog.setHeld(true, name: ".meta") }
        // The descriptor was borrowed: still open.
        #expect(fcntl(fd, F_GETFD) >= 0)
    }

    @Test func emptyOrMissingDirectory() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        #expect(try SnapshotCatalog(path: dir.path).list().isEmpty)
        #expect(throws: Errno.noSuchFileOrDirectory) { try SnapshotCatalog(path: dir.path + "/none") }
    }
}
