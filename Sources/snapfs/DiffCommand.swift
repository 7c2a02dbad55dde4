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

        snapfs diff MOUNT --pair L compares the pre and post snapshots of a pair (snapfs snapshot MOUNT --label L -- COMMAND): what COMMAND changed. L is a label (the newest pair whose snapshots carry it) or the name of either snapshot of a pair.

        On a terminal (stderr), a line counts the entries compared while the walk goes on (not with --json).

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The older snapshot.")
    var a: String?

    @Argument(help: "The newer snapshot (default: the live tree).")
    var b: String?

    @Option(name: .long, help: ArgumentHelp("Compare the pre and post snapshots of a pair: the newest pair labelled L, or the pair a snapshot named L belongs to.",
                                            valueName: "L"))
    var pair: String?

    @Flag(name: .long, help: "Print a JSON array instead of lines.")
    var json = false

    func validate() throws {
        if pair != nil && a != nil { throw ValidationError("give either snapshots A [B] or --pair L, not both") }
        if pair == nil && a == nil { throw ValidationError("missing snapshot A (or --pair L)") }
    }

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        var older = a ?? ""
        var newer = b
        if let pair { (older, newer) = try Self.pairNames(pair, in: mount) }
        let old = try mount.snapshot(older)
        let new = try newer.map { (name) throws(CLIFailure) in try mount.snapshot(name) }
        let newPath = newer.map(mount.snapshotPath) ?? mount.canonical
        let differences: [TreeDiff.Difference]
        let progress = TerminalProgress("entries compared", json: json)
        defer { progress.finish() }
        do {
            differences = try TreeDiff(excludedAtRoot: MountedSnapshots.reservedNames)
                .compare(oldPath: mount.snapshotPath(older), newPath: newPath,
                         only: MountedSnapshots.commonPaths([old] + (new.map { [$0] } ?? [])), progress: progress.meter)
        } catch {
            throw CLIFailure("cannot compare \(older) with \(newer ?? "the live tree"): \(error)", code: ExitStatus.failed)
        }
        progress.finish()
        if json {
            JSONOutput.print(differences.map { JSONOutput.Change($0) })
            return
        }
        for difference in differences { print(difference.description) }
    }

    /// The names of the pre and post snapshots of the pair `key` names (see
    /// ``SnapshotPair/find(_:in:)``); 20 when there is no such pair or it has no post.
    static func pairNames(_ key: String, in mount: MountedSnapshots) throws(CLIFailure) -> (String, String?) {
        guard let found = SnapshotPair.find(key, in: try mount.list()) else {
            throw CLIFailure("there is no pair of snapshots labelled or named \(key) in \(mount.mountpoint)", code: ExitStatus.unknownSnapshot)
        }
        guard let post = found.post else {
            throw CLIFailure("the pair \(key) has no post snapshot (its pre is \(found.pre.name); the command may still run, or the post snapshot failed)",
                             code: ExitStatus.unknownSnapshot)
        }
        return (found.pre.name.description, post.name.description)
    }
}
