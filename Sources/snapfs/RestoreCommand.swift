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
        First takes a safety snapshot of the live tree (label pre-restore) and prints its name, then makes each PATH (default: the whole tree, except .snapshots) equal to the snapshot's: content, permissions, owner, times, extended attributes and symlinks; entries the snapshot does not have are removed, only below the restored paths. Everything is done through the mount, so the daemon sees every change. No snapshot is ever changed or deleted. A PATH missing in the snapshot stops the command before anything changes. PATH is absolute inside the mount, or relative to MOUNT.

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The snapshot to restore from.")
    var snapshot: String

    @Argument(help: "Files or directories to restore (default: everything).")
    var paths: [String] = []

    func run() throws {
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
        let summary: TreeRestore.Summary
        do {
            summary = try TreeRestore(excludedAtRoot: MountedSnapshots.reservedNames)
                .restore(from: source, to: mount.canonical, paths: relative)
        } catch {
            throw CLIFailure("restoring from \(snapshot) stopped: \(error); the tree as it was before is in snapshot \(safety)", code: ExitStatus.failed)
        }
        let what = paths.isEmpty ? "the whole tree" : relative.map(PathText.escaped).joined(separator: ", ")
        print("restored \(what) from \(snapshot): \(summary.written) written, \(summary.linked) linked, \(summary.directoriesCreated) directories created, \(summary.removed) removed, \(summary.unchanged) unchanged")
    }
}
