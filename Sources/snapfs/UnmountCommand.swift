import ArgumentParser
import CLinux
import Glibc
import SnapFSCore
import SnapFSDaemon

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Flush and unmount a snapfs mount.",
        discussion: "First has the daemon write everything back; if it cannot (a full disk, an I/O error), says which files and does not unmount, unless --lazy. Exit codes: 0 unmounted; 17 not a snapfs mount; 16 the unmount failed (e.g. busy); 18 cached data could not be written back (not unmounted, or with --lazy unmounted anyway: the daemon keeps retrying until it exits)."
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Flag(name: .long, help: "Detach now even if files are open (lazy unmount).")
    var lazy = false

    func run() throws {
        let path = MountPlan.canonical(mountpoint) ?? mountpoint
        guard let record = MountTable(MountPlan.readMountTable()).record(at: path),
              record.fileSystemType == "fuse.snapfs" else {
            fail("\(mountpoint) is not a snapfs mount", code: ExitStatus.notSnapfsMount)
        }
        // Push everything written so far through the daemon to the backing directory first.
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = snapfs_syncfs(fd)
            close(fd)
        }
        var unwritten: String?
        if ControlClient.exists(at: path), let reply = try? ControlClient(mountpoint: path).send("flush"), !reply.succeeded {
            unwritten = reply.failureMessage
            if !lazy {
                fail("not unmounting \(mountpoint): \(reply.failureMessage); free space (or fix the error) and try again, or use --lazy", code: ExitStatus.writeBackFailed)
            }
        }
        defer {
            if let unwritten {
                FileHandleStandardError.write("snapfs: unmounted \(mountpoint) lazily with cached data not written back: \(unwritten)\n")
                Glibc.exit(ExitStatus.writeBackFailed)
            }
        }
        if geteuid() == 0 {
            if umount2(path, lazy ? Int32(MNT_DETACH) : 0) != 0 {
                fail("cannot unmount \(mountpoint): \(String(cString: strerror(errno)))", code: ExitStatus.mountFailed)
            }
        } else {
            let status = runProgram(["fusermount3", "-u"] + (lazy ? ["-z"] : []) + [path])
            if status != 0 { fail("cannot unmount \(mountpoint) (fusermount3 exited with \(status))", code: ExitStatus.mountFailed) }
        }
    }
}
