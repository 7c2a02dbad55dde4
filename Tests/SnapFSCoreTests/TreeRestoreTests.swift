import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

@Suite struct TreeRestoreTests {
    func differences(_ a: String, _ b: String, excluded: [String] = []) throws -> [String] {
        try TreeDiff(excludedAtRoot: excluded).compare(oldPath: a, newPath: b).map(\.description)
    }

    func mtime(_ path: String) -> Int {
        var st = stat()
        lstat(path, &st)
        return st.st_mtim.tv_sec
    }

    /// A source tree with one of everything.
    func makeSource(_ root: String) -> TreeBuilder {
        let s = TreeBuilder(root: root)
        s.file("top", "top")
        s.directory("d", mode: 0o750)
        s.file("d/f", "content", mode: 0o640)
        s.directory("d/e")
        s.file("d/e/deep", "deep")
        s.symlink("d/link", to: "f")
        s.file("x", "x")
        _ = setxattr(root + "/x", "user.tag", "v1", 2, 0)
        s.file("hard1", "linked")
        link(root + "/hard1", root + "/hard2")
        mkfifo(root + "/fifo", 0o600)
        for path in ["top", "d/f", "d/e/deep", "d/link", "x", "hard1", "fifo", "d/e", "d"] { s.setTimes(path, seconds: 1_000_000) }
        return s
    }

    @Test func wholeTreeBecomesEqualAndExcludedNamesStay() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = makeSource(dir.directory("snap"))
        let target = TreeBuilder(root: dir.directory("live"))
        target.file("top", "changed!")
        target.directory("d")
        target.file("d/f", "other", mode: 0o600)
        target.directory("d/extra")
        target.file("d/extra/junk", "j")
        target.file("d/e", "was a file")
        target.directory("x")
        target.directory(".snapshots")
        target.file(".snapshots/keep", "k")
        _ = setxattr(target.root + "/top", "user.stale", "s", 1, 0)

        let summary = try TreeRestore(excludedAtRoot: [".snapshots"]).restore(from: source.root, to: target.root, paths: [""])
        #expect(try differences(source.root, target.root, excluded: [".snapshots"]) == [])
        #expect(readFile(target.root + "/.snapshots/keep") == "k")
        #expect(readFile(target.root + "/d/f") == "content")
        #expect(mtime(target.root + "/d/f") == 1_000_000)
        #expect(mtime(target.root + "/d") == 1_000_000)
        var h1 = stat(), h2 = stat()
        stat(target.root + "/hard1", &h1)
        stat(target.root + "/hard2", &h2)
        #expect(h1.st_ino == h2.st_ino)
        #expect(summary.linked == 1)
        #expect(summary.removed >= 3)  // d/extra, d/e (file), x (dir)

        // Restoring again changes nothing.
        let again = try TreeRestore(excludedAtRoot: [".snapshots"]).restore(from: source.root, to: target.root, paths: ["."])
        #expect(again.written == 0 && again.removed == 0 && again.linked == 0 && again.directoriesCreated == 0)
    }

    @Test func onePathOnlyTouchesThatPath() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = makeSource(dir.directory("snap"))
        let target = TreeBuilder(root: dir.directory("live"))
        target.file("top", "live top")
        target.file("unrelated", "u")
        // d is missing in the live tree: restoring d/e/deep recreates d and d/e.
        try TreeRestore().restore(from: source.root, to: target.root, paths: ["d/e/deep"])
        #expect(readFile(target.root + "/d/e/deep") == "deep")
        #expect(readFile(target.root + "/top") == "live top")
        #expect(readFile(target.root + "/unrelated") == "u")
        var st = stat()
        stat(target.root + "/d", &st)
        #expect(st.st_mode & 0o777 == 0o750)
        #expect(access(target.root + "/d/f", F_OK) != 0)  // siblings are not restored

        // A directory path removes what the snapshot does not have below it.
        target.file("d/e/new", "n")
        try TreeRestore().restore(from: source.root, to: target.root, paths: ["d/e"])
        #expect(access(target.root + "/d/e/new", F_OK) != 0)
        #expect(readFile(target.root + "/d/e/deep") == "deep")
    }

    @Test func missingPathFailsBeforeAnyChange() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = makeSource(dir.directory("snap"))
        let target = TreeBuilder(root: dir.directory("live"))
        target.file("top", "live")
        #expect(throws: Errno.noSuchFileOrDirectory) {
            try TreeRestore().restore(from: source.root, to: target.root, paths: ["top", "nope/x"])
        }
        #expect(readFile(target.root + "/top") == "live")
        #expect(throws: Errno.invalidArgument) {
            try TreeRestore().restore(from: source.root, to: target.root, paths: ["../etc"])
        }
        #expect(throws: Errno.invalidArgument) {
            try TreeRestore(excludedAtRoot: [".snapshots"]).restore(from: source.root, to: target.root, paths: [".snapshots/x"])
        }
    }

    @Test func theSourceIsNeverChanged() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = makeSource(dir.directory("snap"))
        let copy = TreeBuilder(root: dir.directory("copy"))
        _ = system("cp -a '\(source.root)/.' '\(copy.root)/'")
        let target = TreeBuilder(root: dir.directory("live"))
        target.file("top", "x")
        try TreeRestore().restore(from: source.root, to: target.root, paths: [""])
        // Writing into the restored tree must not show through to the source.
        target.file("d/f", "scribble")
        _ = setxattr(target.root + "/x", "user.tag", "v2", 2, 0)
        #expect(try differences(copy.root, source.root) == [])
        #expect(readFile(source.root + "/d/f") == "content")
    }
}
