import ArgumentParser
import Glibc
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the snapshots of a snapfs mount or of a backing directory.",
        discussion: """
        Works on a mount, or on a backing directory without snapfs running. The table shows NAME, TIME (UTC), TRIGGER (for a SQLite commit: sqlite:DATABASE#SEQUENCE), LABEL, FILES, SIZE, STRATEGY, HELD and DURABLE (no: published less than a batch delay ago, and not yet synced to the disk; a crash before then removes it), oldest first; `?` marks what a snapshot without readable metadata cannot tell. --json prints a JSON array of the snapshots' metadata objects (for a snapshot without metadata: what its name tells, with trigger kind and strategy "unknown"), each with "durable".

        \(ExitStatus.help)
        """
    )

    @Argument(help: "A snapfs mountpoint, or a backing directory.")
    var path: String

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let entries = try Self.entries(at: path)
        if json {
            JSONOutput.print(entries.map(\.listed))
            return
        }
        var rows = [["NAME", "TIME", "TRIGGER", "LABEL", "FILES", "SIZE", "STRATEGY", "HELD", "DURABLE"]]
        for entry in entries {
            let metadata = entry.metadata
            rows.append([
                entry.name.description,
                Format.time(ms: entry.name.timeMs),
                metadata.map(Self.trigger) ?? "?",
                entry.name.label ?? "-",
                metadata.map { String($0.files) } ?? "?",
                metadata.map { Format.size($0.bytes) } ?? "?",
                metadata?.strategy ?? "?",
                entry.held ? "yes" : "no",
                entry.durable ? "yes" : "no",
            ])
        }
        print(Format.table(rows), terminator: "")
    }

    /// `command`, `sqlite:data/app.db#42`, `timer:15m`.
    static func trigger(_ metadata: SnapshotMetadata) -> String {
        if let sqlite = metadata.sqlite { return "\(metadata.trigger.kind.rawValue):\(sqlite.database)#\(sqlite.sequence)" }
        if let detail = metadata.trigger.detail, !detail.isEmpty { return "\(metadata.trigger.kind.rawValue):\(detail)" }
        return metadata.trigger.kind.rawValue
    }

    /// The snapshots of a mount (through MOUNT/.snapshots) or of a backing directory.
    static func entries(at path: String) throws(CLIFailure) -> [SnapshotEntry] {
        if ControlClient.exists(at: path) { return try MountedSnapshots(path).list() }
        let directory = path + "/" + SnapshotCatalog.directoryName
        var st = stat()
        guard stat(directory, &st) == 0, st.isDirectory else {
            throw CLIFailure("\(path) is neither a snapfs mount nor a backing directory with snapshots", code: ExitStatus.notSnapfsMount)
        }
        do {
            return try SnapshotCatalog(path: directory).list()
        } catch {
            throw CLIFailure("cannot list \(directory): \(error)", code: ExitStatus.failed)
        }
    }
}
