import ArgumentParser
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what changed between two snapshots, or between a snapshot and the live tree.",
        discussion: """
        One line per changed path, sorted: `+ PATH` added, `- PATH` deleted, `M PATH` modified (content, permissions, owner, symlink target or extended attributes; times alone do not count), `T PATH` type changed. Everything below an added or deleted directory is listed too. Without B, A is compared with the live tree (MOUNT itself, without .snapshots). A snapshot of only some files (scope "files") is compared on those files only. --json prints a JSON array of {"change": "added" | "deleted" | "modified" | "type", "path": PATH}, PATH escaped as in the lines.

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The older snapshot.")
    var a: String

    @Argument(help: "The newer snapshot (default: the live tree).")
    var b: String?

    @Flag(name: .long, help: "Print a JSON array instead of lines.")
    var json = false

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        let old = try mount.snapshot(a)
        let new = try b.map { (name) throws(CLIFailure) in try mount.snapshot(name) }
        let newPath = b.map(mount.snapshotPath) ?? mount.canonical
        let differences: [TreeDiff.Difference]
        do {
            differences = try TreeDiff(excludedAtRoot: MountedSnapshots.reservedNames)
                .compare(oldPath: mount.snapshotPath(a), newPath: newPath,
                         only: MountedSnapshots.commonPaths([old] + (new.map { [$0] } ?? [])))
        } catch {
            throw CLIFailure("cannot compare \(a) with \(b ?? "the live tree"): \(error)", code: ExitStatus.failed)
        }
        if json {
            JSONOutput.print(differences.map { JSONOutput.Change($0) })
            return
        }
        for difference in differences { print(difference.description) }
    }
}
