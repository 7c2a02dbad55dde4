import ArgumentParser
import SnapFSCore
import SnapFSDaemon

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Apply the mount's retention rules now.",
        discussion: """
        Removes the snapshots that the mount's --keep-* rules do not keep (held snapshots and the newest are always kept; with no rule, nothing is removed). Prints the names removed, one per line, and a count on stderr.

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        let before = try mount.list().map(\.name)
        let words = try mount.control.run("prune", what: "pruning", action: "prune the snapshots")
        let after = Set(try mount.list().map(\.name))
        for name in before where !after.contains(name) { print(name) }
        let count = words.first == "pruned" ? words.dropFirst().first.map(String.init) ?? "?" : "?"
        FileHandleStandardError.write("pruned \(count) snapshot\(count == "1" ? "" : "s")\n")
    }
}
