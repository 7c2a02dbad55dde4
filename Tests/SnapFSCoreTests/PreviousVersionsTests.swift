import Glibc
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// The `.snapshots/.gmt` view for SMB's previous versions: tokens, one per second, commit
/// snapshots left out.
@Suite struct PreviousVersionsTests {
    // 2026-11-25T11:22:33.456Z
    let sample: Int64 = 1_795_605_753_456

    @Test func tokensNameTheSecond() throws {
        let name = try SnapshotName(timeMs: sample, label: "nightly")
        #expect(name.time.gmtToken == "@GMT-2026.11.25-11.22.33")
        #expect(PreviousVersions.second(ofToken: "@GMT-2026.11.25-11.22.33") == sample / 1000)
        #expect(PreviousVersions.second(ofToken: "@GMT-1970.01.01-00.00.00") == 0)
        #expect(try SnapshotName(timeMs: 0).time.gmtToken == "@GMT-1970.01.01-00.00.00")
    }

    @Test func rejectsAnythingElse() {
        for stray in ["", ".", "..", ".meta", "@GMT-", "20261125T112233.456Z", "@GMT-2026.11.25-11.22.3",
                      "@GMT-2026.11.25-11.22.333", "@gmt-2026.11.25-11.22.33", "@GMT-2026.13.25-11.22.33",
                      "@GMT-2026.02.30-11.22.33", "@GMT-2026.11.25-24.22.33", "@GMT-2026.11.25-11.60.33",
                      "@GMT-2026.11.25-11.22.60", "@GMT-1969.12.31-23.59.59", "@GMT-2026-11-25-11.22.33",
                      "@GMT-2026.11.25_11.22.33", "@GMT-2026.11.2x-11.22.33", "x@GMT-2026.11.25-11.22.33"] {
            #expect(PreviousVersions.second(ofToken: stray) == nil, "\(stray)")
        }
    }

    @Test func oneVersionPerSecondTheNewestTreeSnapshot() throws {
        let a = try SnapshotName(timeMs: sample)                       // 11:22:33.456
        let b = try SnapshotName(timeMs: sample + 100, label: "x")     // 11:22:33.556
        let c = try SnapshotName(timeMs: sample + 543)                 // 11:22:33.999, a commit
        let d = try SnapshotName(timeMs: sample + 544)                 // 11:22:34.000
        let e = try SnapshotName(timeMs: sample + 2000)                // 11:22:35.456, a commit
        let commits: Set<SnapshotName> = [c, e]
        let versions = PreviousVersions.versions(of: [d, c, a, e, b]) { !commits.contains($0) }
        #expect(versions == [PreviousVersions.Version(token: "@GMT-2026.11.25-11.22.33", snapshot: b),
                             PreviousVersions.Version(token: "@GMT-2026.11.25-11.22.34", snapshot: d)])
        #expect(PreviousVersions.versions(of: []) { _ in true }.isEmpty)
    }

    @Test func indexReadsTheStoreAndItsScopes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let tree = try SnapshotName(timeMs: sample)
        let commit = try SnapshotName(timeMs: sample + 1000)
        let bare = try SnapshotName(timeMs: sample + 2000, label: "nometa")
        for name in [tree, commit, bare] { _ = dir.directory(name.description) }
        _ = dir.file(try SnapshotName(timeMs: sample + 3000).description)   // not a directory
        _ = dir.directory(".building-" + (try SnapshotName(timeMs: sample + 4000)).description)
        let fd = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        let catalog = SnapshotCatalog(directoryFD: fd)
        try catalog.writeMetadata(SnapshotMetadata(name: tree, trigger: Trigger(kind: .control), strategy: "copy"))
        try catalog.writeMetadata(SnapshotMetadata(name: commit, trigger: Trigger(kind: .sqlite), strategy: "copy",
                                                   scope: .files))
        let index = PreviousVersionsIndex()
        let versions = try index.versions(storeFD: fd)
        // The commit is left out; a snapshot without metadata counts as a tree snapshot.
        #expect(versions.map(\.snapshot) == [tree, bare])
        #expect(try index.snapshot(forToken: tree.time.gmtToken, storeFD: fd) == tree.description)
        #expect(try index.snapshot(forToken: commit.time.gmtToken, storeFD: fd) == nil)
        #expect(try index.snapshot(forToken: "@GMT-2001.01.01-00.00.00", storeFD: fd) == nil)
        #expect(try index.snapshot(forToken: tree.description, storeFD: fd) == nil)
        // A deleted snapshot leaves the view; a new one in the same second takes the token.
        #expect(rmdir(dir.path + "/" + bare.description) == 0)
        let newer = try SnapshotName(timeMs: sample + 500)
        _ = dir.directory(newer.description)
        #expect(try index.versions(storeFD: fd).map(\.snapshot) == [newer])
    }
}
