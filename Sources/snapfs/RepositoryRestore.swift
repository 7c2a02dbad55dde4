import Glibc
import SnapFSDaemon
import SnapFSReplication
import SnapFSSnapshots
import SystemPackage

/// `snapfs restore --from REPOSITORY SNAPSHOT [PATH…] --to DIR`: a replicated snapshot
/// restored through restic, without the backing directory it came from.
struct RepositoryRestore {
    let repository: ResticRepository
    /// A snapfs snapshot name, `latest`, or a restic snapshot ID (or its prefix).
    let snapshot: String
    /// Relative to the root of the snapshot's tree (a leading `/` is allowed).
    let paths: [String]
    let target: String

    func run() throws(CLIFailure) {
        let restorePaths = try paths.map { (path) throws(CLIFailure) in try Self.treePath(path) }
        try checkTarget()
        if paths.isEmpty && SnapshotName(parsing: snapshot) != nil {
            return try restoreNamed()
        }
        let replica = try throughRepository { () throws(ReplicationError) in try find(in: repository.snapshots()) }
        for (index, path) in restorePaths.enumerated() {
            guard try throughRepository({ () throws(ReplicationError) in try repository.contains(path, in: replica.id) }) else {
                throw CLIFailure("\(paths[index]) is not in snapshot \(replica.name!) of \(repository.shown)", code: ExitStatus.badPath)
            }
        }
        if mkdir(target, 0o700) != 0 && errno != EEXIST {
            throw CLIFailure("cannot make \(target): \(Errno.current)", code: ExitStatus.failed)
        }
        try throughRepository { () throws(ReplicationError) in try repository.restore(replica.id, paths: restorePaths, target: target) }
        let what = paths.isEmpty ? "the whole tree" : paths.joined(separator: ", ")
        print("restored \(what) of \(replica.name!) (restic \(replica.shortID)) from \(repository.shown) into \(target)")
    }

    /// The whole tree of the snapshot named `snapshot`: restored by its tag while the
    /// snapshots are listed (``ResticRepository/restoreNamed(_:target:)``); the listing then
    /// confirms that one snapshot has that name. Should two have it, what was restored is
    /// removed again and the restic IDs are shown, as when the listing comes first.
    private func restoreNamed() throws(CLIFailure) {
        var madeTarget = false
        if mkdir(target, 0o700) == 0 {
            madeTarget = true
        } else if errno != EEXIST {
            throw CLIFailure("cannot make \(target): \(Errno.current)", code: ExitStatus.failed)
        }
        let (failure, listing) = repository.restoreNamed(snapshot, target: target)
        let replica: ReplicaSnapshot
        do throws(ReplicationError) {
            replica = try find(in: listing.get())
        } catch {
            // Unknown or ambiguous: nothing restored stays.
            emptyTarget(remove: madeTarget)
            throw CLIFailure(error)
        }
        if let failure { throw CLIFailure(failure) }
        print("restored the whole tree of \(replica.name!) (restic \(replica.shortID)) from \(repository.shown) into \(target)")
    }

    /// Removes what a restore put in the target (and the target, if the restore made it).
    private func emptyTarget(remove: Bool) {
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        for name in (try? DirectoryNames.utf8Names(in: fd)) ?? [] {
            _ = try? TreeRemover.remove(parent: fd, name: name)
        }
        close(fd)
        if remove { rmdir(target) }
    }

    /// The replica `snapshot` names.
    private func find(in replicas: [ReplicaSnapshot]) throws(ReplicationError) -> ReplicaSnapshot {
        if snapshot == "latest" {
            guard let newest = replicas.max(by: { $0.name! < $1.name! }) else {
                throw ReplicationError(.notFound, "there is no snapfs snapshot in \(repository.shown)")
            }
            return newest
        }
        let byName = replicas.filter { $0.name?.description == snapshot }
        if byName.count == 1 { return byName[0] }
        if byName.count > 1 {
            // Two stores replicated to one repository, each with a snapshot of this name.
            let sources = byName.map { "\($0.shortID) (\($0.hostname):\($0.paths.first ?? "?"))" }.joined(separator: ", ")
            throw ReplicationError(.usage, "\(repository.shown) holds \(byName.count) snapshots named \(snapshot): \(sources); give the restic ID of one")
        }
        let byID = replicas.filter { snapshot.count >= 8 && $0.id.hasPrefix(snapshot) }
        if byID.count == 1 { return byID[0] }
        throw ReplicationError(.notFound, "there is no snapshot named \(snapshot) in \(repository.shown) (snapfs list --from shows them)")
    }

    /// `a/b` or `/a/b` → `/a/b`; refuses `..`, and empty paths.
    static func treePath(_ path: String) throws(CLIFailure) -> String {
        let components = path.split(separator: "/").filter { $0 != "." }
        if components.isEmpty {
            throw CLIFailure("\"\(path)\" names no file in the snapshot; give no PATH to restore the whole tree", code: ExitStatus.usage)
        }
        if components.contains("..") {
            throw CLIFailure("\(path) leaves the snapshot's tree (..)", code: ExitStatus.badPath)
        }
        return "/" + components.joined(separator: "/")
    }

    /// The target must be an empty directory or not exist: a restore never overwrites.
    private func checkTarget() throws(CLIFailure) {
        var st = stat()
        if lstat(target, &st) != 0 {
            if errno == ENOENT { return }
            throw CLIFailure("cannot use \(target): \(Errno.current)", code: ExitStatus.failed)
        }
        guard st.isDirectory else {
            throw CLIFailure("\(target) is not a directory", code: ExitStatus.usage)
        }
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CLIFailure("cannot open \(target): \(Errno.current)", code: ExitStatus.failed) }
        defer { close(fd) }
        if let names = try? DirectoryNames.utf8Names(in: fd), !names.isEmpty {
            throw CLIFailure("\(target) is not empty; restore --from writes into an empty or new directory only", code: ExitStatus.usage)
        }
    }
}
