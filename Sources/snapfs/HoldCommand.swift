import ArgumentParser
import SnapFSDaemon

struct HoldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hold",
        abstract: "Protect a snapshot from pruning and deletion.",
        discussion: "\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The snapshot's name.")
    var name: String

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        _ = try mount.snapshot(name)
        _ = try mount.control.run("hold \(name)", what: "holding \(name)", action: "hold snapshots")
        print("held \(name)")
    }
}
