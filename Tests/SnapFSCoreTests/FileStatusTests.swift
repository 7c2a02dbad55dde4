import CLinux
import Glibc
import SystemPackage
import Testing
@testable import SnapFSBacking

/// `FileStatus.withoutTimes` (statx without the modification and change times) gives what
/// `FileStatus.of` gives but those two times, on files, directories and symlinks, through
/// `SNAPFS_O_PATH` descriptors as through open ones.
@Suite struct FileStatusTests {
    func expectSame(_ fd: Int32) throws {
        let full = try FileStatus.of(fd)
        let lean = try FileStatus.withoutTimes(fd)
        #expect(lean.st_dev == full.st_dev && lean.st_ino == full.st_ino)
        #expect(lean.st_mode == full.st_mode && lean.st_nlink == full.st_nlink)
        #expect(lean.st_uid == full.st_uid && lean.st_gid == full.st_gid)
        #expect(lean.st_size == full.st_size && lean.st_blocks == full.st_blocks)
        #expect(lean.st_blksize == full.st_blksize && lean.st_rdev == full.st_rdev)
        #expect(lean.st_mtim.tv_sec == 0 && lean.st_mtim.tv_nsec == 0)
        #expect(lean.st_ctim.tv_sec == 0 && lean.st_ctim.tv_nsec == 0)
        #expect(full.st_mtim.tv_sec != 0)
    }

    @Test func givesEverythingButTheTimes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let file = dir.file("data", contents: String(repeating: "x", count: 10_000))
        chmod(file, 0o4751)
        #expect(symlink("data", dir.path + "/link") == 0)
        for (path, flags) in [(file, O_RDONLY), (file, SNAPFS_O_PATH), (dir.path, O_RDONLY | O_DIRECTORY),
                              (dir.path + "/link", SNAPFS_O_PATH | O_NOFOLLOW)] {
            let fd = open(path, flags | O_CLOEXEC)
            #expect(fd >= 0)
            defer { close(fd) }
            try expectSame(fd)
        }
        let fd = open(file, O_RDONLY)
        defer { close(fd) }
        let st = try FileStatus.withoutTimes(fd)
        #expect(st.st_size == 10_000 && st.st_mode & 0o7777 == 0o4751 && st.isRegular)
        #expect(throws: Errno.badFileDescriptor) { try FileStatus.withoutTimes(-1) }
    }
}
