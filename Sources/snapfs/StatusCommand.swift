import ArgumentParser
import SnapFSDaemon

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print the status of a snapfs mount (backing directory, strategy, snapshots, ...).",
        discussion: "Prints the control file's `key: value` status lines.\n\n\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    func run() throws {
        let reply = try MountedSnapshots(mountpoint).control.send(nil)
        for (key, value) in reply.status { print("\(key): \(value)") }
    }
}
