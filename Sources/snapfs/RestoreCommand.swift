import ArgumentParser
import Glibc
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots
import SystemPackage

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Make files, or the whole live tree, equal to a snapshot again.",
        discussion: """
        snapfs restore MOUNT SNAPSHOT [PATH...]: first takes a safety snapshot of the live tree (label pre-restore) and prints its name, then makes each PATH (default: the whole tree, except .snapshots) equal to the snapshot's: content, permissions, owner, times, extended attributes and symlinks; entries the snapshot does not have are removed, only below the restored paths. Everything is done through the mount, so the daemon sees every change. No snapshot is ever changed or deleted. A PATH missing in the snapshot stops the command before anything changes. PATH is absolute inside the mount, or relative to MOUNT. On a terminal (stderr), a line counts the entries restored while the walk goes on.

        snapfs restore --from REPOSITORY SNAPSHOT [PATH...] --to DIR: restores a snapshot that snapfs replicate sent to a restic repository, on any machine, into DIR (which must be empty or not exist yet), through restic. SNAPSHOT is a snapfs snapshot name, `latest`, or a restic snapshot ID; PATH is relative to the root of the snapshot's tree.

        \(ExitStatus.help)
        """
    )

    @Argument(help: ArgumentHelp("MOUNT SNAPSHOT [PATH...], or with --from: SNAPSHOT [PATH...] (PATH: files or directories to restore, by default everything).",
                                 valueName: "operands"))
    var operands: [String] = []

    @Option(name: .long, help: "Restore from this restic repository (where snapfs replicate sent the snapshots) instead of a mount.")
    var from: String?

    @Option(name: .long, help: "With --from: the directory to restore into (empty, or made).")
    var to: String?

    @OptionGroup var password: PasswordOption

    var mountpoint: String { operands[0] }
    var snapshot: String { operands[1] }
    var paths: [String] { Array(operands.dropFirst(2)) }

    func validate() throws {
        if from != nil {
            guard !operands.isEmpty else { throw ValidationError("missing SNAPSHOT to restore from the repository") }
            guard to != nil else { throw ValidationError("--from needs --to DIR, the directory to restore into") }
        } else {
            guard to == nil else { throw ValidationError("--to is for restoring --from a repository; a mount is restored in place") }
            guard operands.count >= 2 else { throw ValidationError("missing MOUNT and SNAPSHOT (or --from REPOSITORY SNAPSHOT --to DIR)") }
        }
    }

    func run() throws {
        if let from {
            try RepositoryRestore(repository: password.repository(from), snapshot: operands[0],
                                  paths: Array(operands.dropFirst()), target: to!).run()
            return
        }
        if paths.contains(where: \.isEmpty) {
            throw CLIFailure("an empty PATH names nothing; give no PATH to restore the whole tree", code: ExitStatus.usage)
        }
        let mount = try MountedSnapshots(mountpoint)
        let entry = try mount.snapshot(snapshot)
        let source = mount.snapshotPath(snapshot)
        let raw = RawArguments.bytes(of: paths)
        var relative = try zip(paths, raw).map { (path, bytes) throws(CLIFailure) in
            try mount.relativePath(bytes: bytes, shown: PathText.escaped(bytes))
        }
        if relative.isEmpty {
            // A snapshot of some files only restores those files, never "everything else is gone".
            relative = (MountedSnapshots.commonPaths([entry]) ?? [""]).map { Array($0.utf8) }
        }
        let sourceRoot = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if sourceRoot < 0 {
            throw CLIFailure("cannot open snapshot \(snapshot): \(Errno(rawValue: errno))", code: ExitStatus.failed)
        }
        defer { close(sourceRoot) }
        for (index, path) in relative.enumerated() where !path.isEmpty {
            // Down from the snapshot's root without following symlinks, as the restore will.
            let components = path.split(separator: UInt8(ascii: "/")).map(Array.init)
            let parent = try? TreeDiff.openParent(sourceRoot, components)
            defer { if let parent { close(parent) } }
            guard let fd = parent, (try? TreeDiff.status(fd, components.last!)) != nil else {
                let shown = paths.isEmpty ? PathText.escaped(path) : PathText.escaped(raw[index])
                throw CLIFailure("\(shown) is not in snapshot \(snapshot)", code: ExitStatus.badPath)
            }
        }
        let words = try mount.control.run("snapshot --trigger=restore --force pre-restore", what: "the safety snapshot", action: "restore from the snapshots")
        guard words.first == "snapshot", let safety = words.dropFirst().first else {
            throw CLIFailure("the safety snapshot gave an unexpected answer \"ok \(words.joined(separator: " "))\"", code: ExitStatus.daemonFailed)
        }
        print("safety snapshot: \(safety)")
        // What the mount leaves out of its snapshots is left alone, not removed for being absent.
        var exclusions = SnapshotExclusions.none
        if let value = try mount.control.send(nil).value("exclude") {
            guard let parsed = SnapshotExclusions(statusValue: value) else {
                throw CLIFailure("the mount's exclude patterns cannot be read (\(value))", code: ExitStatus.daemonFailed)
            }
            exclusions = parsed
        }
        let summary: TreeRestore.Summary
        let progress = TerminalProgress("entries restored", json: false)
        defer { progress.finish() }
        do {
            summary = try TreeRestore(excludedAtRoot: MountedSnapshots.reservedNames, exclusions: exclusions, progress: progress.meter)
                .restore(from: source, to: mount.canonical, paths: relative)
            progress.finish()  // before the summary, which may go to the same terminal
        } catch {
            throw CLIFailure("restoring from \(snapshot) stopped: \(error); the tree as it was before is in snapshot \(safety)", code: ExitStatus.failed)
        }
        let what = paths.isEmpty ? "the whole tree" : relative.map(PathText.escaped).joined(separator: ", ")
        print("restored \(what) from \(snapshot): \(summary.written) written, \(summary.linked) linked, \(summary.directoriesCreated) directories created, \(summary.removed) removed, \(summary.unchanged) unchanged")
    }
}
