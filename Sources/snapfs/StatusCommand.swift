import ArgumentParser
import SnapFSDaemon
import SnapFSSnapshots

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print the status of a snapfs mount (backing directory, strategy, snapshots, ...).",
        discussion: "Prints the control file's `key: value` status lines. --json prints one JSON object with the same keys: a value that is a whole number as a number, every other as a string.\n\n\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Flag(name: .long, help: "Print one JSON object instead of lines.")
    var json = false

    func run() throws {
        let reply = try MountedSnapshots(mountpoint).control.send(nil)
        if json {
            JSONOutput.print(JSONOutput.Object(reply.status.map { (key, value) in
                (key, Int64(value).map(JSONOutput.Value.number) ?? .string(value))
            }))
            return
        }
        for (key, value) in reply.status { print("\(key): \(value)") }
    }
}
