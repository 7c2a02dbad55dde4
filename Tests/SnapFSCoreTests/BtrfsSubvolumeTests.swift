import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// btrfs subvolume snapshots on a btrfs image made on a loop device by the test.
@Suite struct BtrfsSubvolumeTests {
    @Test func snapshotTreeIsReadOnlyCompleteAndWithoutTheExcludedNames() throws {
        guard let btrfs = LoopFilesystem.make(.btrfs) else { return }
        defer { btrfs.unmount() }
        // The mount's top directory is the subvolume root that plays the backing directory.
        let backing = btrfs.mountPoint
        let notes = TreeFixture.build(at: backing)
        if !notes.isEmpty { print("fixture on btrfs: \(notes)") }
        mkdir(backing + "/.snapfs-work", 0o700)
        let root = open(backing, O_RDONLY | O_DIRECTORY)
        let snapshots = open(backing + "/.snapshots", O_RDONLY | O_DIRECTORY)
        let work = open(backing + "/.snapfs-work", O_RDONLY | O_DIRECTORY)
        defer { close(root); close(snapshots); close(work) }

        #expect(BtrfsSubvolume.isSubvolumeRoot(root))
        #expect(!BtrfsSubvolume.isSubvolumeRoot(snapshots))
        #expect(StrategyProbe.best(for: root, scratch: work) == .btrfs)
        #expect(StrategyProbe.supportsReflink(in: work))

        let before = TreeDescription.of(backing)
        var began = timespec()
        clock_gettime(CLOCK_MONOTONIC, &began)
        try BtrfsSubvolume.snapshotTree(source: root, into: snapshots, name: ".building-one", excludeAtTop: TreeCloneChecks.excluded)
        var ended = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ended)
        print("btrfs snapshotTree took \(Double(ended.tv_sec - began.tv_sec) * 1000 + Double(ended.tv_nsec - began.tv_nsec) / 1e6) ms")
        // The engine publishes by renaming, which a read-only subvolume allows.
        #expect(renameat(snapshots, ".building-one", snapshots, "one") == 0)
        let one = TreeDescription.of(backing + "/.snapshots/one")
        TreeCloneChecks.compare(expected: before.filter { !TreeCloneChecks.isExcluded($0.key) }, actual: one)

        // Read-only.
        let snapshot = open(backing + "/.snapshots/one", O_RDONLY | O_DIRECTORY)
        defer { close(snapshot) }
        #expect(BtrfsSubvolume.isSubvolumeRoot(snapshot))
        #expect(openat(snapshot, "new-file", O_WRONLY | O_CREAT, 0o644) == -1 && errno == EROFS)
        #expect(unlinkat(snapshot, "a.txt", 0) == -1 && errno == EROFS)

        // Changing the live tree leaves the snapshot alone.
        TreeFixture.file(root, "after-snapshot", "new", mode: 0o644)
        let fd = openat(root, "a.txt", O_WRONLY | O_TRUNC)
        _ = "rewritten".withCString { write(fd, $0, 9) }
        close(fd)
        #expect(readFile(backing + "/.snapshots/one/a.txt") == "hello\n")
        #expect(!TreeCloneChecks.exists(backing + "/.snapshots/one/after-snapshot"))

        // A second snapshot, taken while `.snapshots` holds the first (a nested subvolume,
        // an empty directory in the new snapshot), has no `.snapshots` either.
        try BtrfsSubvolume.snapshotTree(source: root, into: snapshots, name: "two", excludeAtTop: TreeCloneChecks.excluded)
        #expect(!TreeCloneChecks.exists(backing + "/.snapshots/two/.snapshots"))
        #expect(readFile(backing + "/.snapshots/two/a.txt") == "rewritten")

        // The reflink cloner works on btrfs too.
        _ = try TreeCloner(method: .reflink).clone(source: root, into: snapshots, name: "reflinked", excludeAtTop: TreeCloneChecks.excluded)
        #expect(readFile(backing + "/.snapshots/reflinked/a.txt") == "rewritten")

        // Removal: read-only subvolumes, and a subvolume holding a read-only subvolume.
        try TreeRemover.remove(parent: snapshots, name: "one")
        #expect(!TreeCloneChecks.exists(backing + "/.snapshots/one"))
        try BtrfsSubvolume.snapshot(source: root, into: snapshots, name: "outer", readOnly: false)
        let outer = open(backing + "/.snapshots/outer", O_RDONLY | O_DIRECTORY)
        try BtrfsSubvolume.snapshot(source: root, into: outer, name: "inner", readOnly: true)
        // And one deeper, below a plain directory.
        mkdirat(outer, "plain-dir", 0o755)
        let plain = openat(outer, "plain-dir", O_RDONLY | O_DIRECTORY)
        try BtrfsSubvolume.snapshot(source: root, into: plain, name: "deeper", readOnly: true)
        close(plain)
        try BtrfsSubvolume.setReadOnly(outer)
        close(outer)
        try TreeRemover.remove(parent: snapshots, name: "outer")
        #expect(!TreeCloneChecks.exists(backing + "/.snapshots/outer"))
        try TreeRemover.remove(parent: snapshots, name: "two")
        try TreeRemover.remove(parent: snapshots, name: "reflinked")
        #expect(TreeDescription.entries(of: snapshots).map(\.0) == [Array("old-snapshot-file".utf8)])
    }
}
