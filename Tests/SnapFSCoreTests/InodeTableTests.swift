import CLinux
import Glibc
import Testing
@testable import SnapFSCore

@Suite struct InodeTableTests {
    func openPath(_ path: String) -> (Int32, stat) {
        let fd = open(path, SNAPFS_O_PATH)
        var st = stat()
        fstat(fd, &st)
        return (fd, st)
    }

    @Test func sameBackingObjectGetsSameIDAndCountsReferences() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let table = try InodeTable(rootFD: open(dir.path, SNAPFS_O_PATH | O_DIRECTORY))
        let path = dir.file("a")
        let (fd1, st1) = openPath(path)
        let (fd2, st2) = openPath(path)
        let first = table.reference(fd: fd1, status: st1)
        let second = table.reference(fd: fd2, status: st2)
        #expect(first.id == second.id)
        #expect(first.id != InodeTable.rootID)
        #expect(table.lookups(first.id) == 2)
        // The duplicate descriptor was closed, the kept one is still usable. (Tests run in
        // parallel: another may have been given the number since; then it names another file.)
        var now = stat()
        #expect(fstat(fd2, &now) == -1 || now.st_ino != st2.st_ino || now.st_dev != st2.st_dev)
        #expect(fcntl(fd1, F_GETFD) >= 0)
        table.forget(first.id, count: 1)
        #expect(table.lookups(first.id) == 1)
        table.forget(first.id, count: 1)
        #expect(table.lookups(first.id) == nil)
        #expect(throws: (any Error).self) { try table.inode(first.id) }
    }

    @Test func differentObjectsGetDifferentIDsThatAreNeverReused() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let table = try InodeTable(rootFD: open(dir.path, SNAPFS_O_PATH | O_DIRECTORY))
        let (fdA, stA) = openPath(dir.file("a"))
        let a = table.reference(fd: fdA, status: stA).id
        table.forget(a, count: 1)
        let (fdB, stB) = openPath(dir.file("b"))
        let b = table.reference(fd: fdB, status: stB).id
        #expect(a != b)
        // The same object looked up again after being forgotten gets a new id.
        let (fdA2, stA2) = openPath(dir.path + "/a")
        #expect(table.reference(fd: fdA2, status: stA2).id != a)
    }

    @Test func rootIsNeverForgotten() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let table = try InodeTable(rootFD: open(dir.path, SNAPFS_O_PATH | O_DIRECTORY))
        table.forget(InodeTable.rootID, count: 100)
        #expect(try table.inode(InodeTable.rootID).isDirectory)
        #expect(table.count == 1)
    }
}
