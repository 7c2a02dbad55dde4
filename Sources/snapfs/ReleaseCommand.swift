import ArgumentParser
import SnapFSDaemon

struct ReleaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Let a held snapshot be pruned or deleted again.",
        discussion: "\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The snapshot's name.")
    var name: String

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        _ = try mount.snapshot(name)
        _ = try mount.control.run("release \(name)", what: "releasing \(name)", action: "release snapshots")
        print("released \(name)")
    }
}
