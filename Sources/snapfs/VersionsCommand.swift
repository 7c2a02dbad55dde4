import ArgumentParser
import Glibc
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots
import SystemPackage

struct VersionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "versions",
        abstract: "List the distinct versions of one file across all snapshots and the live tree.",
        discussion: """
        Oldest first, one line per version: SIZE, MODIFIED (UTC) and the snapshots it appears in (`live` for the live tree). Snapshots in a row with identical content are one version; a snapshot without the file is skipped. PATH is absolute inside the mount, or relative to MOUNT. --json prints a JSON array of {"type": "file" | "symlink" | "other", "size": BYTES, "modified": MILLISECONDS since the epoch, "snapshots": [NAME or "live", …]}.

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The file, absolute inside the mount or relative to MOUNT.")
    var path: String

    @Flag(name: .long, help: "Print a JSON array instead of a table.")
    var json = false

    /// One occurrence of the file: a snapshot (or the live tree) that has it.
    struct Occurrence {
        let label: String
        let root: String
        let status: stat
    }

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        let raw = RawArguments.bytes(of: path)
        let shown = PathText.escaped(raw)
        let relative = try mount.relativePath(bytes: raw, shown: shown)
        if relative.isEmpty {
            throw CLIFailure("\(shown) is the root of the mount; versions shows the versions of a file", code: ExitStatus.usage)
        }
        var sources = try mount.list().map { ($0.name.description, mount.snapshotPath($0.name.description)) }
        sources.append(("live", mount.canonical))
        var occurrences: [Occurrence] = []
        var sawDirectory = false
        let components = relative.split(separator: UInt8(ascii: "/")).map(Array.init)
        for (label, root) in sources {
            // Down from the root without following a symlink on the way: `esc -> /etc` in the
            // tree must not make `esc/shadow` a version of anything.
            guard let parent = try? openParent(root, components) else { continue }
            defer { close(parent) }
            guard let found = try? TreeDiff.status(parent, components.last!) else { continue }
            if found.isDirectory { sawDirectory = true; continue }
            occurrences.append(Occurrence(label: label, root: root, status: found))
        }
        if occurrences.isEmpty {
            if sawDirectory {
                throw CLIFailure("\(shown) is a directory; versions shows the versions of a file", code: ExitStatus.usage)
            }
            throw CLIFailure("\(shown) is in no snapshot of \(mountpoint) and not in the live tree", code: ExitStatus.badPath)
        }
        // Each version: its first occurrence and every snapshot that has it.
        var versions: [(first: Occurrence, labels: [String])] = []
        for occurrence in occurrences {
            if let last = versions.last, try same(last.first, occurrence, relative) {
                versions[versions.count - 1].labels.append(occurrence.label)
            } else {
                versions.append((occurrence, [occurrence.label]))
            }
        }
        if json {
            JSONOutput.print(versions.map { version in
                let st = version.first.status
                return JSONOutput.Version(type: st.isRegular ? "file" : st.isSymlink ? "symlink" : "other",
                                          size: Int64(st.st_size),
                                          modified: Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000,
                                          snapshots: version.labels)
            })
            return
        }
        var rows = [["SIZE", "MODIFIED", "SNAPSHOTS"]]
        for version in versions {
            let st = version.first.status
            let modified = Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000
            let size = st.isSymlink ? "symlink" : Format.size(Int64(st.st_size))
            rows.append([size, Format.time(ms: modified), version.labels.joined(separator: ", ")])
        }
        print(Format.table(rows), terminator: "")
    }

    /// Whether two occurrences hold the same content: the same inode, or the same type and
    /// bytes (or symlink target).
    private func same(_ a: Occurrence, _ b: Occurrence, _ relative: [UInt8]) throws(CLIFailure) -> Bool {
        if a.status.st_dev == b.status.st_dev && a.status.st_ino == b.status.st_ino { return true }
        if a.status.fileType != b.status.fileType { return false }
        if a.status.isRegular && a.status.st_size != b.status.st_size { return false }
        let components = relative.split(separator: UInt8(ascii: "/")).map(Array.init)
        let name = components.last!
        do {
            guard let dirA = try openParent(a.root, components) else { return false }
            defer { close(dirA) }
            guard let dirB = try openParent(b.root, components) else { return false }
            defer { close(dirB) }
            if a.status.isRegular { return try FileContent.equal(in: dirA, name, and: dirB, name) }
            if a.status.isSymlink { return try TreeDiff.linkTarget(dirA, name) == TreeDiff.linkTarget(dirB, name) }
            return a.status.st_rdev == b.status.st_rdev
        } catch {
            throw CLIFailure("cannot compare \(PathText.escaped(relative)) in \(a.label) and \(b.label): \(error)", code: ExitStatus.failed)
        }
    }

    /// The directory holding the last of `components` below the directory `root`, reached
    /// without following symlinks; nil if something on the way is missing or not a directory.
    private func openParent(_ root: String, _ components: [[UInt8]]) throws(Errno) -> Int32? {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw Errno(rawValue: errno) }
        defer { close(fd) }
        return try TreeDiff.openParent(fd, components)
    }
}
