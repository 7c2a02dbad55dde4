import Glibc
@testable import SnapFSCore
@testable import SnapFSDaemon
import Testing

@Suite struct MountPlanTests {
    func validate(_ backing: String, _ mountpoint: String, nonEmpty: Bool = false, table: String = "",
                  device: String = "/dev/null") -> Result<MountPlan, MountProblem> {
        do {
            return .success(try MountPlan.validate(backing: backing, mountpoint: mountpoint, allowNonEmpty: nonEmpty,
                                                   mountTable: table, fuseDevice: device))
        } catch {
            return .failure(error)
        }
    }

    @Test func reportsEachProblemWithItsExitCode() {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backing = dir.directory("backing")
        let mnt = dir.directory("mnt")
        let file = dir.file("file")
        let cases: [(Result<MountPlan, MountProblem>, Int32)] = [
            (validate(dir.path + "/missing", mnt), 10),
            (validate(file, mnt), 10),
            (validate(backing, dir.path + "/missing"), 11),
            (validate(backing, file), 11),
            (validate(backing, mnt, table: "36 25 0:32 / \(dir.path)/mnt rw - fuse.snapfs x rw\n"), 13),
            (validate(backing, backing), 15),
            (validate(dir.path, mnt), 15),
            (validate(backing, dir.path, nonEmpty: true), 15),
            (validate(backing, mnt, device: dir.path + "/no-fuse"), 14),
        ]
        for (result, code) in cases {
            guard case .failure(let problem) = result else {
                Issue.record("expected exit code \(code), got success")
                continue
            }
            #expect(problem.exitCode == code, "\(problem.message)")
            #expect(!problem.message.isEmpty && !problem.message.contains("\n"))
        }
    }

    @Test func nonEmptyMountpointNeedsTheOption() {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backing = dir.directory("backing")
        let mnt = dir.directory("mnt")
        _ = dir.file("mnt/existing")
        guard case .failure(let problem) = validate(backing, mnt) else {
            Issue.record("non-empty mountpoint accepted")
            return
        }
        #expect(problem.exitCode == 12)
        guard case .success(let plan) = validate(backing, mnt, nonEmpty: true) else {
            Issue.record("nonempty option ignored")
            return
        }
        #expect(plan.backing == backing)
        #expect(plan.mountpoint == mnt)
    }

    @Test func pathsAreCanonicalised() {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backing = dir.directory("backing")
        _ = dir.directory("mnt")
        guard case .success(let plan) = validate(dir.path + "/mnt/../backing/.", dir.path + "/./mnt") else {
            Issue.record("valid paths refused")
            return
        }
        #expect(plan.backing == backing)
        #expect(plan.mountpoint == dir.path + "/mnt")
    }

    @Test func overlapIsAboutPathComponents() {
        #expect(MountPlan.overlaps("/a/b", "/a/b"))
        #expect(MountPlan.overlaps("/a/b", "/a/b/c"))
        #expect(MountPlan.overlaps("/a/b/c", "/a/b"))
        #expect(!MountPlan.overlaps("/a/b", "/a/bc"))
        #expect(!MountPlan.overlaps("/a/bc", "/a/b"))
        #expect(MountPlan.overlaps("/", "/x"))
    }
}

@Suite struct MountTableTests {
    @Test func parsesMountinfoWithEscapesAndOptionalFields() {
        let text = """
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
        40 22 0:45 / /tmp/with\\040space rw,nosuid shared:5 master:1 - fuse.snapfs /srv/data rw,user_id=0
        41 22 0:46 / /mnt/x rw - tmpfs tmpfs rw
        """
        let table = MountTable(text)
        #expect(table.records.count == 3)
        #expect(table.contains(mountpoint: "/tmp/with space"))
        #expect(table.record(at: "/tmp/with space")?.fileSystemType == "fuse.snapfs")
        #expect(table.record(at: "/tmp/with space")?.source == "/srv/data")
        #expect(!table.contains(mountpoint: "/tmp/with"))
        #expect(table.record(at: "/mnt/x")?.fileSystemType == "tmpfs")
    }

    @Test func ignoresMalformedLines() {
        #expect(MountTable("garbage\n\n1 2 3\n").records.isEmpty)
    }
}

@Suite struct MountOptionsTests {
    @Test func separatesSnapfsOptionsFromFuseOptions() {
        let options = MountOptions(["nonempty", "ro", "allow_other", "writeback_cache", "defaults", "noauto", "x-systemd.automount", "max_read=65536"])
        #expect(options.allowNonEmpty)
        #expect(options.readOnly)
        #expect(options.writebackCache)
        #expect(options.passed == ["ro", "allow_other", "max_read=65536"])
        let fuse = options.fuseOptions(backing: "/srv/a,b", asRoot: true)
        #expect(fuse.first == "fsname=/srv/a\\,b")
        #expect(fuse.contains("subtype=snapfs"))
        #expect(fuse.contains("default_permissions"))
        #expect(fuse.filter { $0 == "allow_other" }.count == 1)
    }

    @Test func kernelWritebackCacheByDefaultAndUringWithout() {
        #expect(MountOptions([]).writebackCache)
        #expect(!MountOptions(["no_writeback_cache"]).writebackCache)
        #expect(MountOptions(["no_writeback_cache", "writeback_cache"]).writebackCache)
        let ring = MountOptions(["uring"])
        #expect(ring.uring && !ring.writebackCache && ring.problems.isEmpty)
        let both = MountOptions(["uring", "writeback_cache"])
        #expect(both.problems.contains { $0.contains("uring and writeback_cache") })
        #expect(MountOptions(["uring", "no_writeback_cache"]).problems.isEmpty)
    }

    @Test func allowOtherOnlyForRootUnlessRefused() {
        #expect(!MountOptions([]).fuseOptions(backing: "/b", asRoot: false).contains("allow_other"))
        #expect(MountOptions([]).fuseOptions(backing: "/b", asRoot: true).contains("allow_other"))
        #expect(!MountOptions(["noallow_other"]).fuseOptions(backing: "/b", asRoot: true).contains("allow_other"))
    }

    @Test func durableDelayIsADurationUpToAnHour() {
        #expect(MountOptions([]).snapshots.durableDelayMs == 5000)
        #expect(MountOptions(["durable_delay=200ms"]).snapshots.durableDelayMs == 200)
        #expect(MountOptions(["durable_delay=0"]).snapshots.durableDelayMs == 0)
        #expect(MountOptions(["durable_delay=1h"]).snapshots.durableDelayMs == 3_600_000)
        #expect(MountOptions(["durable_delay=2h"]).problems.count == 1)
        #expect(MountOptions(["durable_delay=soon"]).problems.count == 1)
        #expect(MountOptions(["durable_delay=1s"]).passed.isEmpty)
    }
}
