import ArgumentParser
import Glibc
import SnapFSDaemon

struct DeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete one snapshot.",
        discussion: "A held snapshot cannot be deleted: release it first.\n\n\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The snapshot's name.")
    var name: String

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        _ = try mount.snapshot(name)
        let reply = try mount.control.send("delete \(name)", action: "delete snapshots")
        if !reply.succeeded {
            switch reply.failureErrno {
            case ENOENT: throw CLIFailure("there is no snapshot named \(name) in \(mountpoint)", code: ExitStatus.unknownSnapshot)
            case EBUSY: throw CLIFailure("\(name) is held; release it first (snapfs release)", code: ExitStatus.daemonFailed)
            default: throw CLIFailure("deleting \(name) failed: \(reply.failureMessage)", code: ExitStatus.daemonFailed)
            }
        }
        print("deleted \(name)")
    }
}
