import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// Builds small trees under a temporary directory.
struct TreeBuilder {
    let root: String

    @discardableResult
    func file(_ path: String, _ contents: String = "", mode: mode_t = 0o644) -> String {
        let full = root + "/" + path
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC, mode)
        _ = contents.withCString { write(fd, $0, strlen($0)) }
        fchmod(fd, mode)
        close(fd)
        return full
    }

    func directory(_ path: String, mode: mode_t = 0o755) {
        mkdir(root + "/" + path, mode)
        chmod(root + "/" + path, mode)
    }

    func symlink(_ path: String, to target: String) { Glibc.symlink(target, root + "/" + path) }

    func setTimes(_ path: String, seconds: Int) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, root + "/" + path, &times, AT_SYMLINK_NOFOLLOW)
    }
}

@Suite struct TreeDiffTests {
    func lines(_ old: String, _ new: String, excluded: [String] = [], only: [String]? = nil) throws -> [String] {
        try TreeDiff(excludedAtRoot: excluded).compare(oldPath: old, newPath: new, only: only).map(\.description)
    }

    @Test func reportsAddedDeletedModifiedAndTypeChanged() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let a = TreeBuilder(root: dir.directory("a"))
        let b = TreeBuilder(root: dir.directory("b"))
        for t in [a, b] {
            t.file("same", "same")
            t.directory("d")
            t.file("d/same", "x")
            t.symlink("link-same", to: "same")
        }
        a.file("deleted", "gone")
        a.directory("olddir")
        a.file("olddir/inner", "1")
        b.file("added", "new")
        b.directory("newdir")
        b.directory("newdir/sub")
        b.file("newdir/sub/f", "f")
        a.file("content", "abc"); b.file("content", "abd")  // same size, other bytes
        a.file("size", "abc"); b.file("size", "abcd")
        a.file("mode", "m", mode: 0o644); b.file("mode", "m", mode: 0o600)
        a.symlink("link", to: "x"); b.symlink("link", to: "y")
        a.file("totype", "t"); b.directory("totype"); b.file("totype/child", "c")
        a.directory("fromdir"); a.file("fromdir/child", "c"); b.symlink("fromdir", to: "z")
        a.file("d/changed", "1"); b.file("d/changed", "2")
        a.file("xattr", "v"); b.file("xattr", "v")
        #expect(setxattr(b.root + "/xattr", "user.note", "hi", 2, 0) == 0)
        // Times alone are no change.
        a.file("touched", "t"); b.file("touched", "t"); a.setTimes("touched", seconds: 1000)

        #expect(try lines(a.root, b.root) == [
            "+ added", "M content", "M d/changed", "- deleted",
            "T fromdir", "- fromdir/child", "M link", "M mode",
            "+ newdir", "+ newdir/sub", "+ newdir/sub/f", "- olddir", "- olddir/inner",
            "M size", "T totype", "+ totype/child", "M xattr",
        ])
        // The other way round, + and - swap.
        #expect(try lines(b.root, a.root).filter { $0.hasPrefix("+") } == ["+ deleted", "+ fromdir/child", "+ olddir", "+ olddir/inner"])
        #expect(try lines(a.root, a.root).isEmpty)
    }

    @Test func directoryMetadataAndOwnerCount() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let a = TreeBuilder(root: dir.directory("a"))
        let b = TreeBuilder(root: dir.directory("b"))
        a.directory("d", mode: 0o755); b.directory("d", mode: 0o700)
        a.file("owned", "o"); b.file("owned", "o")
        if geteuid() == 0 { chown(b.root + "/owned", 1234, 1234) }
        var expected = ["M d"]
        if geteuid() == 0 { expected.append("M owned") }
        #expect(try lines(a.root, b.root) == expected)
    }

    @Test func hardLinkedFilesAreNotRead() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let a = TreeBuilder(root: dir.directory("a"))
        let b = TreeBuilder(root: dir.directory("b"))
        a.file("shared", "data")
        link(a.root + "/shared", b.root + "/shared")
        // Unreadable content would make a comparison fail; a shared inode is never opened.
        chmod(a.root + "/shared", 0)
        #expect(try lines(a.root, b.root).isEmpty)
    }

    @Test func excludesNamesAtTheRootOnly() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let a = TreeBuilder(root: dir.directory("a"))
        let b = TreeBuilder(root: dir.directory("b"))
        b.directory(".snapshots")
        b.file(".snapshots/x", "x")
        b.directory("sub")
        b.directory("sub/.snapshots")
        a.directory("sub")
        #expect(try lines(a.root, b.root, excluded: [".snapshots", ".snapfs-control"]) == ["+ sub/.snapshots"])
    }

    @Test func restrictsToPaths() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let a = TreeBuilder(root: dir.directory("a"))
        let b = TreeBuilder(root: dir.directory("b"))
        a.directory("db"); b.directory("db")
        a.file("db/app.db", "1"); b.file("db/app.db", "2")
        b.file("db/app.db-wal", "w")
        b.file("other", "o")
        #expect(try lines(a.root, b.root, only: ["db/app.db", "db/app.db-wal", "db/app.db-journal", "missing/x"])
                == ["M db/app.db", "+ db/app.db-wal"])
        #expect(try lines(a.root, b.root, only: ["db", "db/app.db"]) == ["M db/app.db", "+ db/app.db-wal"])
        #expect(try lines(a.root, b.root, only: [""]) == ["M db/app.db", "+ db/app.db-wal", "+ other"])
    }
}
