import ArgumentParser
import Glibc
import SnapFSCore
import SnapFSDaemon
import SnapFSReplication
import SnapFSSnapshots

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the snapshots of a snapfs mount or of a backing directory.",
        discussion: """
        Works on a mount, on a backing directory without snapfs running, or with --from on a restic repository that snapfs replicate sent snapshots to (from any machine: NAME, TIME, TRIGGER, LABEL, ID (restic's), HOST and SOURCE, the backing directory they came from; --json: objects with name, time, trigger, label, scope, database, held, id, host, source). The table shows NAME, TIME (UTC), TRIGGER (for a SQLite commit: sqlite:DATABASE#SEQUENCE), LABEL, PAIR (pre or post for the snapshots of a pair, taken by snapfs snapshot -- COMMAND), FILES, SIZE, STRATEGY, HELD and DURABLE (no: published less than a batch delay ago, and not yet synced to the disk; a crash before then removes it), oldest first; `?` marks what a snapshot without readable metadata cannot tell. --json prints a JSON array of the snapshots' metadata objects (for a snapshot without metadata: what its name tells, with trigger kind and strategy "unknown"), each with "durable" and "pair" (null, or {"role": "pre" | "post", "pre": NAME, "post": NAME or null while a pre has no post}).

        \(ExitStatus.help)
        """
    )

    @Argument(help: "A snapfs mountpoint, or a backing directory.")
    var path: String?

    @Option(name: .long, help: "List the snapfs snapshots in this restic repository instead.")
    var from: String?

    @OptionGroup var password: PasswordOption

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        if (path == nil) == (from == nil) {
            throw ValidationError("give either a mountpoint or backing directory, or --from REPOSITORY")
        }
    }

    func run() throws {
        guard let path else {
            return try listRepository(from!)
        }
        let entries = try Self.entries(at: path)
        if json {
            JSONOutput.print(SnapshotPair.completed(entries))
            return
        }
        var rows = [["NAME", "TIME", "TRIGGER", "LABEL", "PAIR", "FILES", "SIZE", "STRATEGY", "HELD", "DURABLE"]]
        for entry in entries {
            let metadata = entry.metadata
            rows.append([
                entry.name.description,
                Format.time(ms: entry.name.timeMs),
                metadata.map(Self.trigger) ?? "?",
                entry.name.label ?? "-",
                metadata.map { $0.pair?.role.rawValue ?? "-" } ?? "?",
                metadata.map { String($0.files) } ?? "?",
                metadata.map { Format.size($0.bytes) } ?? "?",
                metadata?.strategy ?? "?",
                entry.held ? "yes" : "no",
                entry.durable ? "yes" : "no",
            ])
        }
        print(Format.table(rows), terminator: "")
    }

    private func listRepository(_ location: String) throws(CLIFailure) {
        let replicas = try throughRepository { () throws(ReplicationError) in try password.repository(location).snapshots() }
        let listed = replicas.map(RemoteSnapshot.init)
        if json {
            JSONOutput.print(listed)
            return
        }
        var rows = [["NAME", "TIME", "TRIGGER", "LABEL", "ID", "HOST", "SOURCE"]]
        for item in listed {
            let trigger = item.database.map { "\(item.trigger):\($0)" } ?? item.trigger
            rows.append([item.name, Format.time(ms: SnapshotName(parsing: item.name)?.timeMs ?? 0), trigger,
                         item.label ?? "-", String(item.id.prefix(8)), item.host, item.source])
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

/// A snapfs snapshot in a restic repository, as `list --from --json` prints it.
struct RemoteSnapshot: Encodable {
    let name: String
    let time: String
    let trigger: String
    let label: String?
    let scope: String
    let database: String?
    let held: Bool
    /// restic's snapshot ID.
    let id: String
    let host: String
    /// The backing directory the snapshot came from.
    let source: String

    init(_ replica: ReplicaSnapshot) {
        let name = replica.name!
        self.name = name.description
        time = name.time.iso8601
        trigger = replica.triggerKind ?? "unknown"
        label = replica.label
        scope = replica.scope.rawValue
        database = replica.database
        held = replica.held
        id = replica.id
        host = replica.hostname
        let suffix = "/" + SnapshotCatalog.directoryName + "/" + name.description
        let path = replica.paths.first ?? ""
        source = path.hasSuffix(suffix) ? String(path.dropLast(suffix.count)) : path
    }

    private enum CodingKeys: String, CodingKey { case name, time, trigger, label, scope, database, held, id, host, source }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(time, forKey: .time)
        try c.encode(trigger, forKey: .trigger)
        try c.encode(label, forKey: .label)
        try c.encode(scope, forKey: .scope)
        try c.encode(database, forKey: .database)
        try c.encode(held, forKey: .held)
        try c.encode(id, forKey: .id)
        try c.encode(host, forKey: .host)
        try c.encode(source, forKey: .source)
    }
}
