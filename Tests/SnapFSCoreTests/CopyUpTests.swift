import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// Copy-up without a mount: a hard-link "snapshot" is made by linking a backing file into
/// another directory and raising the generation, as the hard-link strategy does.
@Suite struct CopyUpTests {
    let root = InodeTable.rootID
    let me = RequestContext.daemon

    /// A filesystem whose snapshots share objects, and a fake snapshot directory.
    func makeFS(_ dir: TemporaryDirectory) throws -> SnapFileSystem {
        let state = SnapshotState()
        state.sharesObjects.store(true, ordering: .relaxed)
        _ = dir.directory("snap")
        return try SnapFileSystem(backingPath: dir.path, snapshotState: state)
    }

    func fakeSnapshot(_ fs: SnapFileSystem, _ dir: TemporaryDirectory, _ names: [String]) {
        for name in names {
            unlink(dir.path + "/snap/" + name)
            #expect(link(dir.path + "/" + name, dir.path + "/snap/" + name) == 0)
        }
        fs.snapshotState.generation.wrappingAdd(1, ordering: .relaxed)
    }

    func write(_ fs: SnapFileSystem, _ file: OpenFile, _ text: String, at offset: Int64 = 0) throws {
        _ = try Array(text.utf8).withUnsafeBytes { try fs.write(file, $0, offset: offset, context: me) }
    }

    func inode(_ path: String) -> UInt64 {
        var st = stat()
        stat(path, &st)
        return UInt64(st.st_ino)
    }

    @Test func aWriteAfterASnapshotGoesToAPrivateCopyThroughTheSameOpenFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try makeFS(dir)
        let (entry, file) = try fs.create(parent: root, name: "f", mode: 0o640, flags: O_RDWR, context: me)
        try write(fs, file, "original")
        fakeSnapshot(fs, dir, ["f"])
        let shared = inode(dir.path + "/f")
        #expect(inode(dir.path + "/snap/f") == shared)

        try write(fs, file, "CHANGED!")
        #expect(readFile(dir.path + "/snap/f") == "original")
        #expect(readFile(dir.path + "/f") == "CHANGED!")
        #expect(inode(dir.path + "/f") != shared)
        // The kernel's inode is the same; it now stands for the copy.
        let node = try fs.inodes.inode(entry.inode)
        #expect(node.key.inode == inode(dir.path + "/f"))
        #expect(try fs.getattr(entry.inode).st_mode & 0o777 == 0o640)
        // A second write needs no second copy.
        let copy = inode(dir.path + "/f")
        try write(fs, file, "again", at: 8)
        #expect(inode(dir.path + "/f") == copy)
        #expect(readFile(dir.path + "/f") == "CHANGED!again")
        // The descriptor the open file holds was moved too: reads see the new data.
        var buffer = [UInt8](repeating: 0, count: 13)
        #expect(pread(file.fd, &buffer, 13, 0) == 13)
        #expect(String(decoding: buffer, as: UTF8.self) == "CHANGED!again")
    }

    @Test func attributeAndXattrChangesAndTruncationCopyUpFirst() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.file("a", contents: "aaaa")
        _ = dir.file("b", contents: "bbbb")
        _ = dir.file("c", contents: "cccc")
        let fs = try makeFS(dir)
        let a = try fs.lookup(parent: root, name: "a")
        let b = try fs.lookup(parent: root, name: "b")
        let c = try fs.lookup(parent: root, name: "c")
        fakeSnapshot(fs, dir, ["a", "b", "c"])
        _ = try fs.setattr(a.inode, AttributeChanges(mode: 0o600), file: nil, context: me)
        try "v".withCString { value in
            try fs.setxattr(b.inode, name: "user.k", value: UnsafeRawBufferPointer(start: value, count: 1), flags: 0)
        }
        let truncated = try fs.open(c.inode, flags: O_WRONLY | O_TRUNC, context: me)
        _ = truncated
        var st = stat()
        stat(dir.path + "/snap/a", &st)
        #expect(st.st_mode & 0o777 == 0o644)
        stat(dir.path + "/a", &st)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(getxattr(dir.path + "/snap/b", "user.k", nil, 0) < 0)
        #expect(getxattr(dir.path + "/b", "user.k", nil, 0) == 1)
        #expect(readFile(dir.path + "/snap/c") == "cccc")
        #expect(readFile(dir.path + "/c") == "")
        #expect(readFile(dir.path + "/a") == "aaaa")
    }

    @Test func aFileLookedUpAfterRemountWithSeveralLinksIsCopiedNotWrittenInPlace() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("snap")
        _ = dir.file("f", contents: "old")
        #expect(link(dir.path + "/f", dir.path + "/snap/f") == 0)
        // A fresh filesystem (a new mount): it knows nothing of earlier snapshots but the links.
        let state = SnapshotState()
        state.sharesObjects.store(true, ordering: .relaxed)
        let fs = try SnapFileSystem(backingPath: dir.path, snapshotState: state)
        let f = try fs.lookup(parent: root, name: "f")
        let file = try fs.open(f.inode, flags: O_RDWR, context: me)
        try write(fs, file, "new")
        #expect(readFile(dir.path + "/snap/f") == "old")
        #expect(readFile(dir.path + "/f") == "new")
    }

    @Test func aRenamedFileIsCopiedUpUnderItsNewName() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try makeFS(dir)
        let (_, file) = try fs.create(parent: root, name: "f", mode: 0o644, flags: O_RDWR, context: me)
        try write(fs, file, "one")
        fakeSnapshot(fs, dir, ["f"])
        let sub = try fs.mkdir(parent: root, name: "sub", mode: 0o755, context: me)
        try fs.rename(parent: root, name: "f", newParent: sub.inode, newName: "g", flags: 0)
        try write(fs, file, "two")
        #expect(readFile(dir.path + "/snap/f") == "one")
        #expect(readFile(dir.path + "/sub/g") == "two")
        #expect(access(dir.path + "/f", F_OK) != 0)
    }

    @Test func anUnlinkedOpenFileStillSharedIsCopiedToAnUnnamedFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try makeFS(dir)
        let (_, file) = try fs.create(parent: root, name: "f", mode: 0o644, flags: O_RDWR, context: me)
        try write(fs, file, "kept")
        fakeSnapshot(fs, dir, ["f"])
        try fs.unlink(parent: root, name: "f")
        try write(fs, file, "gone")
        #expect(readFile(dir.path + "/snap/f") == "kept")
        var buffer = [UInt8](repeating: 0, count: 4)
        #expect(pread(file.fd, &buffer, 4, 0) == 4)
        #expect(String(decoding: buffer, as: UTF8.self) == "gone")
    }

    @Test func withoutSharingNothingIsCopied() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("snap")
        let fs = try SnapFileSystem(backingPath: dir.path)
        let (_, file) = try fs.create(parent: root, name: "f", mode: 0o644, flags: O_RDWR, context: me)
        let before = inode(dir.path + "/f")
        fs.snapshotState.generation.wrappingAdd(1, ordering: .relaxed)
        try write(fs, file, "x")
        #expect(inode(dir.path + "/f") == before)
    }
}
