import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// The hard-link and copy cloners on the root filesystem (ext4 here), and their failures.
@Suite struct TreeClonerTests {
    static let isRoot = geteuid() == 0

    @Test(.enabled(if: isRoot), arguments: [(CloneMethod.hardlink, 1), (.hardlink, 3), (.hardlink, TreeCloner.defaultThreads), (.copy, 1), (.copy, 2)])
    func clonePreservesEveryAttributeOfEveryEntry(method: CloneMethod, threads: Int) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        let snapshots = dir.directory("snaps")
        let notes = TreeFixture.build(at: source)
        if !notes.isEmpty { print("fixture: \(notes)") }
        let (sourceTree, clone) = try TreeCloneChecks.cloneAndCompare(source: source, parent: snapshots,
                                                                      method: method, threads: threads)
        // The fixture really has what is compared.
        if notes.isEmpty {
            #expect(sourceTree[Array("acl-dir".utf8)]!.attributes[Array("system.posix_acl_default".utf8)] != nil)
            #expect(sourceTree[Array("acl-file".utf8)]!.attributes[Array("system.posix_acl_access".utf8)] != nil)
            #expect(sourceTree[Array("xattr-file".utf8)]!.attributes.count == 5)
        }
        #expect(sourceTree[Array("dir1/setuid-prog".utf8)]!.mode == S_IFREG | 0o4755)
        // The excluded name is skipped at the top only.
        #expect(clone[Array("nested/.snapshots".utf8)] != nil)
        #expect(clone[Array(".snapshots".utf8)] == nil)
        if method == .copy {
            // Holes stay holes.
            let sparse = clone[Array("sparse".utf8)]!
            #expect(sparse.blocks * 512 < 1 << 20, "\(sparse.blocks) blocks")
            TreeCloneChecks.checkIndependence(source: source, clone: snapshots + "/snap")
        } else {
            // Linked once more by the clone.
            #expect(clone[Array("hl1".utf8)]!.links == 2 * sourceTree[Array("hl1".utf8)]!.links)
        }

        // The removal handles read-only and unreadable directories and deep nesting.
        let parent = open(snapshots, O_RDONLY | O_DIRECTORY)
        defer { close(parent) }
        try TreeRemover.remove(parent: parent, name: "snap")
        #expect(!TreeCloneChecks.exists(snapshots + "/snap"))
        #expect(TreeCloneChecks.exists(source + "/a.txt"))
    }

    @Test func reflinkWhereUnsupportedFailsAndLeavesNothing() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        _ = dir.directory("src/sub")
        _ = dir.file("src/sub/file", contents: "data")
        let parent = open(dir.directory("snaps"), O_RDONLY | O_DIRECTORY)
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        defer { close(parent); close(sourceFD) }
        guard !StrategyProbe.supportsReflink(in: parent) else { return }  // not ext4 after all
        #expect(throws: Errno.self) {
            try TreeCloner(method: .reflink).clone(source: sourceFD, into: parent, name: "snap", excludeAtTop: [])
        }
        #expect(!TreeCloneChecks.exists(dir.path + "/snaps/snap"))
        #expect(StrategyProbe.best(for: sourceFD, scratch: parent) == .hardlink)
    }

    /// A hard link cannot cross into another filesystem mounted inside the tree: the error
    /// comes from deep in a multi-threaded walk and everything made is removed.
    @Test(.enabled(if: isRoot)) func failureMidwayRemovesThePartialClone() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        for index in 0..<20 {
            _ = dir.directory("src/d\(index)")
            for file in 0..<20 { _ = dir.file("src/d\(index)/f\(file)", contents: "x") }
        }
        let mountPoint = dir.directory("src/d7/mnt")
        guard LoopFilesystem.shell("mount -t tmpfs tmpfs '\(mountPoint)'").0 == 0 else {
            Issue.record("cannot mount tmpfs")
            return
        }
        defer { LoopFilesystem.shell("umount '\(mountPoint)'") }
        _ = dir.file("src/d7/mnt/elsewhere", contents: "other filesystem")
        let parent = open(dir.directory("snaps"), O_RDONLY | O_DIRECTORY)
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        defer { close(parent); close(sourceFD) }
        #expect(throws: Errno.improperLink) {
            try TreeCloner(method: .hardlink, threads: 2).clone(source: sourceFD, into: parent, name: "snap", excludeAtTop: [])
        }
        #expect(!TreeCloneChecks.exists(dir.path + "/snaps/snap"))
        // The copy method crosses it fine.
        let statistics = try TreeCloner(method: .copy).clone(source: sourceFD, into: parent, name: "copy", excludeAtTop: [])
        #expect(statistics.files == 401)
        #expect(readFile(dir.path + "/snaps/copy/d7/mnt/elsewhere") == "other filesystem")
    }

    @Test func anExistingNameIsRefusedAndKept() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        _ = dir.directory("snaps")
        _ = dir.directory("snaps/snap")
        _ = dir.file("snaps/snap/keep", contents: "mine")
        let parent = open(dir.path + "/snaps", O_RDONLY | O_DIRECTORY)
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        defer { close(parent); close(sourceFD) }
        #expect(throws: Errno.fileExists) {
            try TreeCloner(method: .hardlink).clone(source: sourceFD, into: parent, name: "snap", excludeAtTop: [])
        }
        #expect(readFile(dir.path + "/snaps/snap/keep") == "mine")
        #expect(throws: Errno.invalidArgument) {
            try TreeCloner(method: .hardlink).clone(source: sourceFD, into: parent, name: "a/b", excludeAtTop: [])
        }
    }

    @Test(.enabled(if: isRoot), arguments: [CloneMethod.hardlink, .copy])
    func clonePathsTakesOnlyThosePathsAndTheirDirectories(method: CloneMethod) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        let root = open(source, O_RDONLY | O_DIRECTORY)
        defer { close(root) }
        TreeFixture.directory(root, "db", mode: 0o755)
        TreeFixture.inside(root, "db") { db in
            TreeFixture.file(db, "app.db", "database", mode: 0o640)
            TreeFixture.chown(db, "app.db", TreeFixture.nobody, TreeFixture.nobody)
            TreeFixture.file(db, "app.db-wal", "wal", mode: 0o600)
            TreeFixture.xattr(db, "app.db-wal", "user.wal", Array("w".utf8))
            TreeFixture.file(db, "unrelated", "no", mode: 0o644)
            TreeFixture.directory(db, "inner", mode: 0o700)
        }
        TreeFixture.chown(root, "db", TreeFixture.nobody, 0)
        TreeFixture.mode(root, "db", 0o2750)
        TreeFixture.xattr(root, "db", "user.dir", Array("d".utf8))
        TreeFixture.file(root, "top.txt", "top", mode: 0o644)
        TreeFixture.file(root, "other.txt", "other", mode: 0o644)
        TreeFixture.setTimes(root)
        let before = TreeDescription.of(source)

        let parentPath = dir.directory("snaps")
        let parent = open(parentPath, O_RDONLY | O_DIRECTORY)
        defer { close(parent) }
        let cloner = TreeCloner(method: method)
        let statistics = try cloner.clone(paths: ["db/app.db", "db/app.db-wal", "top.txt", "db/app.db"],
                                          from: root, into: parent, name: "files")
        #expect(statistics == CloneStatistics(files: 3, directories: 2, bytes: 8 + 3 + 3))
        let clone = TreeDescription.of(parentPath + "/files")
        let wanted: Set<String> = ["", "db", "db/app.db", "db/app.db-wal", "top.txt"]
        TreeCloneChecks.compare(expected: before.filter { wanted.contains(String(decoding: $0.key, as: UTF8.self)) },
                                actual: clone)

        #expect(throws: Errno.isDirectory) { try cloner.clone(paths: ["db/inner"], from: root, into: parent, name: "x") }
        #expect(throws: Errno.invalidArgument) { try cloner.clone(paths: ["../etc/passwd"], from: root, into: parent, name: "x") }
        #expect(throws: Errno.invalidArgument) { try cloner.clone(paths: ["/etc/passwd"], from: root, into: parent, name: "x") }
        #expect(throws: Errno.noSuchFileOrDirectory) { try cloner.clone(paths: ["db/missing"], from: root, into: parent, name: "x") }
        #expect(!TreeCloneChecks.exists(parentPath + "/x"))
    }
}
