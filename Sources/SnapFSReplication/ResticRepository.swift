import FoundationEssentials
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// A restic repository, reached by running `restic` (the Debian package; 0.14 or later).
///
/// Credentials follow restic's own conventions and never appear on a command line or in a
/// message: the location goes to restic as `RESTIC_REPOSITORY`, the password as
/// `RESTIC_PASSWORD_FILE` (the file given here) or whatever `RESTIC_PASSWORD*` the caller's
/// environment holds, and the backends' own variables (`AWS_*`, `B2_*`, …) pass through.
/// Every other variable of the caller is left out of restic's environment.
public struct ResticRepository: Sendable {
    /// The location as given (`s3:http://host/bucket/path`, `/srv/restic`, `sftp:…`).
    public let location: String
    /// A file holding the password, or nil to use the environment's `RESTIC_PASSWORD*`.
    public let passwordFile: String?
    /// The location as messages show it: credentials in a URL replaced by `***`.
    public let shown: String
    private let callerEnvironment: [String: String]
    /// Where the restic running now is noted, so that its owner can interrupt it.
    public let watch: ChildWatch?

    /// Variables passed on to restic whatever their name: what it needs to run and to find
    /// its cache, certificates and proxies.
    static let passedNames: Set<String> = ["PATH", "HOME", "TMPDIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR",
                                           "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"]
    /// Prefixes of restic's own variables and of its backends'.
    static let passedPrefixes = ["RESTIC_", "AWS_", "B2_", "AZURE_", "GOOGLE_", "ST_", "OS_", "RCLONE_"]

    public init(location: String, passwordFile: String? = nil, environment: [String: String] = ChildProcess.callerEnvironment(),
                watch: ChildWatch? = nil) {
        self.watch = watch
        self.location = location
        self.passwordFile = passwordFile
        shown = Redaction.userinfo(location)
        callerEnvironment = environment
    }

    /// restic's whole environment (`NAME=value`).
    public func environment() -> [String] {
        var env = callerEnvironment.filter { (name, _) in
            Self.passedNames.contains(name) || Self.passedPrefixes.contains { name.hasPrefix($0) }
        }
        env["RESTIC_REPOSITORY"] = location
        env["RESTIC_REPOSITORY_FILE"] = nil
        if let passwordFile {
            env["RESTIC_PASSWORD_FILE"] = passwordFile
            env["RESTIC_PASSWORD"] = nil
            env["RESTIC_PASSWORD_COMMAND"] = nil
        }
        if env["PATH"] == nil { env["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        // `backup --time` is read in the local zone: UTC, as snapshot names are.
        env["TZ"] = "UTC"
        return env.map { "\($0.key)=\($0.value)" }.sorted()
    }

    /// Checks that a password is given and readable, before restic would ask for one on a
    /// terminal.
    public func checkPassword() throws(ReplicationError) {
        let env = environment()
        let given = env.contains { $0.hasPrefix("RESTIC_PASSWORD=") || $0.hasPrefix("RESTIC_PASSWORD_COMMAND=") }
        guard let file = env.first(where: { $0.hasPrefix("RESTIC_PASSWORD_FILE=") }).map({ String($0.dropFirst(21)) }) else {
            if given { return }
            throw ReplicationError(.noPassword, "no password for the repository \(shown): give --password-file FILE, or set RESTIC_PASSWORD_FILE")
        }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw ReplicationError(.noPassword, "cannot read the password file \(file): \(Errno.current)")
        }
        close(fd)
    }

    // MARK: Running restic

    /// Runs `restic ARGUMENTS` and returns its outcome, whatever its status. Throws only when
    /// restic cannot be started.
    public func run(_ arguments: [String], directoryFD: Int32? = nil, lastLineOnly: Bool = false,
                    inheritedFD: Int32? = nil) throws(ReplicationError) -> ChildProcess.Outcome {
        let child = ChildProcess(arguments: ["restic"] + arguments, environment: environment(),
                                 directoryFD: directoryFD, lastLineOnly: lastLineOnly, inheritedFD: inheritedFD)
        do {
            return try child.run { pid in watch?.update(pid) }
        } catch .noSuchFileOrDirectory {
            throw ReplicationError(.resticMissing, "restic is not installed (apt-get install restic); snapfs replicates through it")
        } catch {
            throw ReplicationError(.failed, "cannot start restic: \(error)")
        }
    }

    /// Runs restic and returns its standard output; a non-zero status becomes the error its
    /// standard error describes.
    @discardableResult
    public func checked(_ arguments: [String], directoryFD: Int32? = nil, lastLineOnly: Bool = false) throws(ReplicationError) -> [UInt8] {
        let outcome = try run(arguments, directoryFD: directoryFD, lastLineOnly: lastLineOnly)
        guard outcome.status == 0 else {
            throw ReplicationError.restic(status: outcome.status, errorText: outcome.errorText, repository: shown)
        }
        if outcome.outputTruncated {
            throw ReplicationError(.failed, "restic printed more than \(ChildProcess.outputLimit >> 20) MiB for `restic \(arguments.first ?? "")`")
        }
        return outcome.output
    }

    // MARK: Commands

    /// Creates the repository (`restic init`).
    public func initialize() throws(ReplicationError) {
        try checkPassword()
        try checked(["init"])
    }

    /// The repository's ID (from its config): the same wherever the repository is reached
    /// from, so it names the record of what was replicated to it.
    public func repositoryID() throws(ReplicationError) -> String {
        try checkPassword()
        let output = try checked(["cat", "config"])
        struct Config: Decodable { let id: String }
        guard let config = try? JSONDecoder().decode(Config.self, from: Data(output)),
              !config.id.isEmpty, config.id.utf8.allSatisfy({ Self.isHexDigit($0) }) else {
            throw ReplicationError(.failed, "the repository \(shown) gave a config without an ID")
        }
        return config.id
    }

    /// The restic snapshots that snapfs made (tag `snapfs`), oldest first. Read without
    /// taking restic's lock (`--no-lock`), so that a listing works while a `prune` or
    /// `check` holds it.
    public func snapshots() throws(ReplicationError) -> [ReplicaSnapshot] {
        try checkPassword()
        let output = try checked(["snapshots", "--no-lock", "--json", "--tag", ReplicaSnapshot.baseTag])
        guard let list = ReplicaSnapshot.decodeList(output) else {
            throw ReplicationError(.failed, "cannot read the snapshot list of \(shown) (restic printed no JSON list)")
        }
        return list.filter { $0.name != nil }.sorted { ($0.name!, $0.time) < ($1.name!, $1.time) }
    }

    /// Whether the restic snapshot `id` holds `path` (`/a/b`, from the root of the tree): the
    /// entries of its parent directory are listed (not the whole tree).
    public func contains(_ path: String, in id: String) throws(ReplicationError) -> Bool {
        let parent = path.split(separator: "/").dropLast().joined(separator: "/")
        let output = try checked(["ls", "--no-lock", "--json", id, "/" + parent])
        struct Node: Decodable { let path: String?; let struct_type: String? }
        for line in output.split(separator: UInt8(ascii: "\n")) {
            if let node = try? JSONDecoder().decode(Node.self, from: Data(line)), node.struct_type == "node", node.path == path {
                return true
            }
        }
        return false
    }

    /// Restores the restic snapshot `id` into `target`: the paths given (`/a/b`, with what is
    /// below them), or everything.
    public func restore(_ id: String, paths: [String], target: String) throws(ReplicationError) {
        var arguments = ["restore", id, "--target", target]
        for path in paths { arguments += ["--include", Self.literalPattern(path)] }
        try checked(arguments)
    }

    /// Restores the whole tree of the snapfs snapshot `name` into `target` with one restic
    /// start, which finds it by its tag (`restore latest --tag snapfs-name=NAME`), while a
    /// second restic lists the snapshots beside it (each start spends about half a second
    /// deriving the key: side by side they cost one). Returns the listing, and restic's
    /// failure if the restore failed: the caller tells from the listing whether the name was
    /// unknown, or held by two snapshots (two stores replicated to one repository).
    public func restoreNamed(_ name: String, target: String) -> (failure: ReplicationError?, listing: Result<[ReplicaSnapshot], ReplicationError>) {
        let listed = Mutex<Result<[ReplicaSnapshot], ReplicationError>?>(nil)
        let list: @Sendable () -> Void = { [self] in
            let result: Result<[ReplicaSnapshot], ReplicationError>
            do throws(ReplicationError) { result = .success(try snapshots()) } catch { result = .failure(error) }
            listed.withLock { $0 = result }
        }
        let thread = ThreadBody.spawn(list)
        var failure: ReplicationError?
        do throws(ReplicationError) {
            try checked(["restore", "latest", "--tag", ReplicaSnapshot.baseTag + "-name=" + TagText.encode(name), "--target", target])
        } catch {
            failure = error
        }
        // No thread to be had: the listing after the restore, then.
        if let thread { pthread_join(thread, nil) } else { list() }
        return (failure, listed.withLock { $0 }!)
    }

    /// A path as a restic filter pattern that matches only itself: `*`, `?`, `[` and `\`
    /// escaped.
    static func literalPattern(_ path: String) -> String {
        var out = ""
        for character in path {
            if "*?[\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

/// The restic child one owner runs now (a mount's replication), so that it can be
/// interrupted when the daemon ends.
public final class ChildWatch: Sendable {
    private let current = Mutex<pid_t?>(nil)

    public init() {}

    func update(_ pid: pid_t?) {
        current.withLock { $0 = pid }
    }

    /// Sends SIGINT to the child running now (restic then removes its lock and exits), and
    /// waits until it is reaped, `timeoutMs` at most.
    public func interrupt(timeoutMs: Int) {
        guard let pid = current.withLock({ pid in pid.map { kill($0, SIGINT); return $0 } }) else { return }
        for _ in 0..<max(1, timeoutMs / 50) where current.withLock({ $0 == pid }) {
            usleep(50_000)
        }
    }
}
