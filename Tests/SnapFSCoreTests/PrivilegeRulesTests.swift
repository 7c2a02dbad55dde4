import Glibc
import Testing
@testable import SnapFSCore

/// The mode rules snapfs applies itself because the kernel leaves them to the daemon.
@Suite struct PrivilegeRulesTests {
    let stranger = RequestContext(uid: 1000, gid: 1000, pid: getpid(), umask: 0o022)

    @Test func anUnprivilegedWriteDropsSetUserID() {
        #expect(SnapFileSystem.modeAfterWrite(0o4755, fileGroup: 0, caller: stranger) == 0o755)
    }

    @Test func setGroupIDGoesWhenGroupExecutableOrTheWriterIsNotInTheGroup() {
        // Group-executable: dropped even for a member of the group.
        #expect(SnapFileSystem.modeAfterWrite(0o2775, fileGroup: 1000, caller: stranger) == 0o775)
        // Not group-executable, writer in the group: kept.
        #expect(SnapFileSystem.modeAfterWrite(0o2764, fileGroup: 1000, caller: stranger) == 0o2764)
        // Not group-executable, writer outside the group: dropped (Linux ≥ 6.2).
        #expect(SnapFileSystem.modeAfterWrite(0o2767, fileGroup: 4242, caller: stranger) == 0o767)
    }

    @Test func supplementaryGroupsComeFromProcStatus() {
        let text = "Name:\tsh\nUmask:\t0022\nGroups:\t4 24 27 \nNgid:\t0\n"
        #expect(RequestContext.groups(inStatus: text) == [4, 24, 27])
        #expect(RequestContext.groups(inStatus: "Groups:\t\n") == [])
        #expect(RequestContext.groups(inStatus: "nothing") == [])
    }

    @Test func fileSetIDCapabilityComesFromProcStatus() {
        let text = "Name:\tsh\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffef\nCapBnd:\t000001ffffffffff\n"
        #expect(RequestContext.effectiveCapabilities(inStatus: text) == 0x1ff_ffff_ffef)
        #expect(RequestContext.effectiveCapabilities(inStatus: "nothing") == nil)
        // No such process: root is trusted, anyone else is not.
        #expect(RequestContext(uid: 0, gid: 0, pid: 0).holdsFileSetID)
        #expect(!RequestContext(uid: 1000, gid: 1000, pid: 0).holdsFileSetID)
        #expect(RequestContext(uid: 0, gid: 0, pid: getpid()).holdsFileSetID == (geteuid() == 0))
    }

    @Test func newObjectsGetTheCallersUmaskWithoutADefaultACL() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try SnapFileSystem(backingPath: dir.path)
        let caller = RequestContext(uid: geteuid(), gid: getegid(), pid: getpid(), umask: 0o027)
        let (entry, file) = try fs.create(parent: InodeTable.rootID, name: "f", mode: 0o666, flags: O_RDWR, context: caller)
        fs.release(file)
        #expect(entry.attributes.st_mode & 0o777 == 0o640)
        let sub = try fs.mkdir(parent: InodeTable.rootID, name: "d", mode: 0o777, context: caller)
        #expect(sub.attributes.st_mode & 0o777 == 0o750)
    }
}
