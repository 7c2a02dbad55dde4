import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// The reflink cloner on an XFS image with reflink=1, made on a loop device by the test.
@Suite struct ReflinkClonerTests {
    @Test func reflinkClonePreservesEverythingAndSharesNoInode() throws {
        guard let xfs = LoopFilesystem.make(.xfs) else { return }
        defer { xfs.unmount() }
        let source = xfs.mountPoint + "/src"
        let snapshots = xfs.mountPoint + "/snaps"
        mkdir(source, 0o755)
        mkdir(snapshots, 0o755)
        let notes = TreeFixture.build(at: source)
        if !notes.isEmpty { print("fixture on XFS: \(notes)") }

        let parent = open(snapshots, O_RDONLY | O_DIRECTORY)
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        defer { close(parent); close(sourceFD) }
        #expect(StrategyProbe.supportsReflink(in: parent))
        #expect(StrategyProbe.best(for: sourceFD, scratch: parent) == .reflink)
        #expect(!BtrfsSubvolume.isSubvolumeRoot(sourceFD))

        for threads in [1, 2, TreeCloner.defaultThreads] {
            let name = "snap\(threads)"
            let (_, clone) = try TreeCloneChecks.cloneAndCompare(source: source, parent: snapshots, name: name,
                                                                 method: .reflink, threads: threads)
            #expect(clone[Array("sparse".utf8)]!.blocks * 512 < 1 << 20)
            TreeCloneChecks.checkIndependence(source: source, clone: snapshots + "/" + name)
            try TreeRemover.remove(parent: parent, name: name)
            #expect(!TreeCloneChecks.exists(snapshots + "/" + name))
        }

        // Extents are shared: a 64 MiB file clones without using 64 MiB more.
        let big = open(source + "/big", O_WRONLY | O_CREAT, 0o644)
        var chunk = [UInt8](repeating: 0xAB, count: 1 << 20)
        for index in 0..<64 { _ = pwrite(big, &chunk, chunk.count, off_t(index) << 20) }
        fsync(big)
        close(big)
        var before = statvfs()
        var after = statvfs()
        statvfs(xfs.mountPoint, &before)
        _ = try TreeCloner(method: .reflink).clone(source: sourceFD, into: parent, name: "shared", excludeAtTop: [])
        snapfs_syncfs(parent)
        statvfs(xfs.mountPoint, &after)
        let used = (Int(before.f_bfree) - Int(after.f_bfree)) * Int(after.f_frsize)
        #expect(used < 16 << 20, "the clone used \(used) bytes")
    }
}
