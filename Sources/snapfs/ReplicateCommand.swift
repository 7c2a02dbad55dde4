import ArgumentParser
import Glibc
import SnapFSBacking
import SnapFSDaemon
import SnapFSReplication
import SnapFSSnapshots

struct ReplicateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replicate",
        abstract: "Send every snapshot not yet in a restic repository there, oldest first.",
        discussion: """
        Each snapfs snapshot becomes one restic snapshot, with the snapshot's time and tags for its name, trigger, scope, label and database (docs/replication.md). Only files whose size or modification time changed since the previous snapshot sent are read. Of the snapshots taken at SQLite commits, at most one per --commit-interval per database is sent, and always the newest. What was sent is recorded in BACKING/.snapshots/.meta/replication/; a run that was killed is resumed by the next. Credentials go to restic through its environment only: --password-file (or RESTIC_PASSWORD_FILE, RESTIC_PASSWORD, RESTIC_PASSWORD_COMMAND), AWS_* and the like for the backend. Run as root: it reads the backing directory's snapshots. Given a mount, its retention rules carry over: the restic snapshots of this backing directory that the rules would remove are forgotten (held snapshots are kept, tagged snapfs-held); --prune then frees their data (restic prune).

        \(ExitStatus.help)
        """
    )

    @Argument(help: "A snapfs mountpoint, or a backing directory.")
    var path: String

    @Option(name: .long, help: "The restic repository (s3:http://host/bucket/path, /srv/restic, sftp:..., rest:...).")
    var to: String

    @OptionGroup var password: PasswordOption

    @Option(name: .long, help: "At most one snapshot per database per interval of SQLite commits (0: every one).")
    var commitInterval = "5s"

    @Flag(name: .long, help: "Create the repository if there is none (restic init).")
    var `init` = false

    @Flag(name: .long, help: "Run restic prune at the end, to free the data of the snapshots forgotten (now or before).")
    var prune = false

    @Flag(name: .long, help: "Print one JSON object (the snapshots sent, with restic's summaries) instead of lines.")
    var json = false

    func run() throws {
        let intervalMs: Int64
        if commitInterval == "0" {
            intervalMs = 0
        } else if let ms = MountOptions.parseDuration(commitInterval) {
            intervalMs = ms
        } else {
            throw CLIFailure("--commit-interval \(commitInterval) is not a duration (like 500ms, 5s, 1m, or 0)", code: ExitStatus.usage)
        }
        let (backing, retention) = try Self.backingDirectory(of: path)
        let repository = password.repository(to)
        let replicator = Replicator(backing: backing, repository: repository, commitIntervalMs: intervalMs, retention: retention)
        let report: Replicator.Report
        do throws(ReplicationError) {
            if `init` {
                do {
                    _ = try repository.repositoryID()
                } catch where error.kind == .noRepository {
                    try repository.initialize()
                }
            }
            report = try replicator.run(prune: prune ? .always : .never, confirmIdle: true, progress: { sent in
                guard !json else { return }
                let s = sent.summary
                print("\(sent.name) -> \(sent.id): \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnmodified) unmodified files; \(Format.size(s.dataAdded)) added"
                      + (sent.passedOver.isEmpty ? "" : "; passes over \(sent.passedOver.count) commit snapshots"))
                fflush(nil)
            })
        } catch {
            throw CLIFailure(error)
        }
        if json {
            JSONOutput.print(ReplicateReport(report, repository: repository.shown))
        } else {
            print("replicated \(report.sent.count) snapshots to \(repository.shown) (\(report.alreadyThere) found there already, \(report.passedOver) commit snapshots passed over)")
            if !report.forgotten.isEmpty { print("forgot \(report.forgotten.count) by the retention rules: \(report.forgotten.joined(separator: " "))") }
            if report.pruned { print("pruned the repository") }
        }
    }

    /// The canonical backing directory of a mount (read from its status) and its retention
    /// rules, or a backing directory given as is (no rules).
    static func backingDirectory(of path: String) throws(CLIFailure) -> (String, RetentionPolicy) {
        var directory = path
        var retention = RetentionPolicy()
        if ControlClient.exists(at: path) {
            let reply = try MountedSnapshots(path).control.send(nil)
            guard let backing = reply.value("backing") else {
                throw CLIFailure("the mount \(path) did not say its backing directory", code: ExitStatus.daemonFailed)
            }
            directory = backing
            // `keep_last=20 keep_commits=100`, as -o options.
            if let rules = reply.value("retention") {
                retention = MountOptions(rules.split(separator: " ").map(String.init)).snapshots.retention
            }
        }
        guard let canonical = MountPlan.canonical(directory) else {
            throw CLIFailure("\(path) is neither a snapfs mount nor a backing directory with snapshots", code: ExitStatus.notSnapfsMount)
        }
        var st = stat()
        guard stat(canonical + "/" + SnapshotCatalog.directoryName, &st) == 0, st.isDirectory else {
            if errno == EACCES {
                throw CLIFailure("only root may replicate \(path) (its snapshots in \(canonical)/.snapshots are root's)", code: ExitStatus.notPermitted)
            }
            throw CLIFailure("\(path) is neither a snapfs mount nor a backing directory with snapshots", code: ExitStatus.notSnapfsMount)
        }
        if access(canonical + "/" + SnapshotCatalog.directoryName, R_OK | X_OK) != 0 {
            throw CLIFailure("only root may replicate \(path) (its snapshots in \(canonical)/.snapshots are root's)", code: ExitStatus.notPermitted)
        }
        return (canonical, retention)
    }
}

/// `--json` of `replicate`.
struct ReplicateReport: Encodable {
    let repository: String
    let repositoryID: String
    let sent: [Replicator.Sent]
    let alreadyThere: Int
    let passedOver: Int
    let forgotten: [String]
    let pruned: Bool

    init(_ report: Replicator.Report, repository: String) {
        self.repository = repository
        repositoryID = report.repositoryID
        sent = report.sent
        alreadyThere = report.alreadyThere
        passedOver = report.passedOver
        forgotten = report.forgotten
        pruned = report.pruned
    }
}

/// The password option of the commands that reach a repository.
struct PasswordOption: ParsableArguments {
    @Option(name: .long, help: "A file holding the repository's password (else the environment's RESTIC_PASSWORD_FILE, RESTIC_PASSWORD or RESTIC_PASSWORD_COMMAND).")
    var passwordFile: String?

    func repository(_ location: String) -> ResticRepository {
        // restic runs in a snapshot's directory: a relative path is made absolute here.
        ResticRepository(location: location, passwordFile: passwordFile.map(absolutePath))
    }
}

extension CommandFailure {
    /// A replication failure as the CLI reports it.
    init(_ error: ReplicationError) {
        switch error.kind {
        case .notFound: self.init(error.message, code: ExitStatus.unknownSnapshot)
        case .usage: self.init(error.message, code: ExitStatus.usage)
        default: self.init(error.message, code: ExitStatus.repositoryFailed)
        }
    }
}

/// Runs `body`, turning a replication failure into the CLI's.
func throughRepository<T>(_ body: () throws(ReplicationError) -> T) throws(CLIFailure) -> T {
    do {
        return try body()
    } catch {
        throw CLIFailure(error)
    }
}
