import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// A snapshot gives nobody access the live tree did not give: the directories on a
/// database's path keep their owner, mode and ACLs, and the store is root's alone.
@Suite struct SnapshotAccessTests {
    func makeEngine(_ dir: TemporaryDirectory, strategy: SnapshotStrategy = .copy) throws -> SnapshotEngine {
        var options = SnapshotOptions()
        options.strategy = strategy
        return try SnapshotEngine(backingPath: dir.path, state: SnapshotState(), options: options)
    }

    func source(_ dir: TemporaryDirectory, file: String, path: String) -> DatabaseSnapshotSource {
        DatabaseSnapshotSource(file: open(dir.path + "/" + file, O_RDONLY | O_CLOEXEC), path: path, pageSize: 4096)
    }

    func info(_ path: String) -> SQLiteCommitInfo {
        SQLiteCommitInfo(database: path, journalMode: "delete", sequence: 1, size: 3)
    }

    func status(_ path: String) -> stat? {
        var st = stat()
        return lstat(path, &st) == 0 ? st : nil
    }

    @Test(arguments: [SnapshotStrategy.copy, .hardlink])
    func theDirectoriesOnTheDatabasePathKeepOwnerModeAndAttributes(strategy: SnapshotStrategy) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        chmod(dir.path, 0o751)
        _ = dir.directory("home")
        _ = dir.directory("home/bob")
        _ = dir.directory("home/bob/a")
        _ = dir.file("home/bob/a/app.db", contents: "abc")
        chown(dir.path + "/home/bob", 61002, 61002)
        chmod(dir.path + "/home/bob", 0o2700)
        chown(dir.path + "/home/bob/a", 61002, 61003)
        chmod(dir.path + "/home/bob/a", 0o1777)
        let value = Array("v".utf8)
        #expect(setxattr(dir.path + "/home/bob/a", "user.mark", value, value.count, 0) == 0)
        let engine = try makeEngine(dir, strategy: strategy)
        let metadata = try engine.takeDatabase(source(dir, file: "home/bob/a/app.db", path: "home/bob/a/app.db"),
                                               trigger: Trigger(kind: .sqlite), info: info("home/bob/a/app.db"))
        let snapshot = dir.path + "/.snapshots/" + metadata.name
        for (live, copy) in [(dir.path, snapshot), (dir.path + "/home", snapshot + "/home"),
                             (dir.path + "/home/bob", snapshot + "/home/bob"), (dir.path + "/home/bob/a", snapshot + "/home/bob/a")] {
            let l = try #require(status(live)), c = try #require(status(copy))
            #expect(c.st_mode == l.st_mode && c.st_uid == l.st_uid && c.st_gid == l.st_gid, "\(copy)")
            #expect(c.st_mtim.tv_sec == l.st_mtim.tv_sec && c.st_mtim.tv_nsec == l.st_mtim.tv_nsec, "\(copy)")
        }
        var read = [UInt8](repeating: 0, count: 8)
        #expect(getxattr(snapshot + "/home/bob/a", "user.mark", &read, read.count) == 1 && read[0] == UInt8(ascii: "v"))
    }

    @Test func aSymlinkOnThePathFailsTheSnapshotAndLeavesNothing() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("private")
        chmod(dir.path + "/private", 0o700)
        _ = dir.file("private/app.db", contents: "abc")
        symlink("private", dir.path + "/open")
        let engine = try makeEngine(dir)
        #expect(throws: SnapshotFailure.self) {
            try engine.takeDatabase(source(dir, file: "private/app.db", path: "open/app.db"),
                                    trigger: Trigger(kind: .sqlite), info: info("open/app.db"))
        }
        #expect(try engine.catalog.list().isEmpty)
        #expect(try engine.catalog.buildingLeftovers().isEmpty)
    }

    @Test func aPathThatNoLongerLeadsToTheFileFailsTheSnapshot() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("private")
        chmod(dir.path + "/private", 0o700)
        _ = dir.file("private/app.db", contents: "secret")
        _ = dir.directory("open")
        _ = dir.file("open/app.db", contents: "other")
        let engine = try makeEngine(dir)
        let failure = #expect(throws: SnapshotFailure.self) {
            try engine.takeDatabase(source(dir, file: "private/app.db", path: "open/app.db"),
                                    trigger: Trigger(kind: .sqlite), info: info("open/app.db"))
        }
        #expect(failure?.message.contains("moved or replaced") == true)
        #expect(try engine.catalog.list().isEmpty)
    }

    @Test func theStoreIsPrivateAndAnOldOpenStoreIsMadePrivate() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory(".snapshots")
        _ = dir.directory(".snapshots/.meta")
        chmod(dir.path + "/.snapshots", 0o1777)
        chown(dir.path + "/.snapshots", 61001, 61001)
        chmod(dir.path + "/.snapshots/.meta", 0o777)
        _ = try makeEngine(dir)
        let store = try #require(status(dir.path + "/.snapshots"))
        #expect(store.st_mode & 0o7777 == 0o700 && store.st_uid == geteuid() && store.st_gid == getegid())
        let meta = try #require(status(dir.path + "/.snapshots/.meta"))
        #expect(meta.st_mode & 0o7777 == SnapshotCatalog.metadataDirectoryMode && meta.st_uid == geteuid())
        let fresh = TemporaryDirectory()
        defer { fresh.remove() }
        _ = try makeEngine(fresh)
        #expect(status(fresh.path + "/.snapshots").map { $0.st_mode & 0o7777 } == 0o700)
    }
}
