import Glibc
import SnapFSBacking
@testable import SnapFSReplication
import SnapFSSnapshots
import Testing

private func name(_ ms: Int64, _ label: String? = nil) -> SnapshotName {
    try! SnapshotName(timeMs: 1_800_000_000_000 + ms, label: label)
}

@Suite struct ReplicationPlanTests {
    @Test func everyTreeSnapshotOldestFirst() {
        let local = [name(3000), name(1000), name(2000)].map { ReplicationPlan.Candidate(name: $0) }
        let plan = ReplicationPlan(local: local, done: [name(1000).description], lastSentCommitMs: [:], intervalMs: 5000)
        #expect(plan.steps.map(\.name) == [name(2000), name(3000)])
        #expect(plan.steps.allSatisfy { $0.passesOver.isEmpty })
    }

    @Test func theFirstCommitSnapshotOfEachIntervalPerDatabaseAndAlwaysTheLast() {
        // Base 1_800_000_000_000 is a multiple of 5000: intervals start at 0, 5000, 10000.
        let a = [100, 900, 4999, 5000, 7000, 12000, 12001].map { ReplicationPlan.Candidate(name: name($0), database: "a.db") }
        let b = [200, 300].map { ReplicationPlan.Candidate(name: name($0), database: "b.db") }
        let tree = ReplicationPlan.Candidate(name: name(6000))
        let plan = ReplicationPlan(local: a + b + [tree], done: [], lastSentCommitMs: [:], intervalMs: 5000)
        #expect(plan.steps.map(\.name) == [name(100), name(200), name(300), name(5000), name(6000), name(12000), name(12001)])
        let passed = Dictionary(uniqueKeysWithValues: plan.steps.map { ($0.name, $0.passesOver) })
        #expect(passed[name(100)] == [])
        #expect(passed[name(5000)] == [name(900), name(4999)])
        #expect(passed[name(12000)] == [name(7000)])
        #expect(passed[name(12001)] == [])
        #expect(passed[name(300)] == [])
    }

    @Test func anIntervalAlreadySentIsNotSentAgainExceptForTheFinalState() {
        let a = [5100, 5200, 5300].map { ReplicationPlan.Candidate(name: name($0), database: "a.db") }
        let plan = ReplicationPlan(local: a, done: [], lastSentCommitMs: ["a.db": name(5050).timeMs], intervalMs: 5000)
        #expect(plan.steps.map(\.name) == [name(5300)])
        #expect(plan.steps[0].passesOver == [name(5100), name(5200)])
    }

    @Test func theFirstOfTheRunningIntervalGoesAtOnceAndTheFinalStateOnceItEnds() {
        let a = [100, 900, 5100, 5200].map { ReplicationPlan.Candidate(name: name($0), database: "a.db") }
        let tree = ReplicationPlan.Candidate(name: name(5300))
        let plan = ReplicationPlan(local: a + [tree], done: [], lastSentCommitMs: [:], intervalMs: 5000,
                                   holdingOpenAt: name(5400).timeMs)
        #expect(plan.steps.map(\.name) == [name(100), name(5100), name(5300)])
        #expect(plan.steps[1].passesOver == [name(900)])
        #expect(plan.nextDueMs == name(12500).timeMs)
        // The first of the running interval sent: the rest waits, nothing is passed over.
        let held = ReplicationPlan(local: [a[3]], done: [], lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000,
                                   holdingOpenAt: name(5400).timeMs)
        #expect(held.steps.isEmpty)
        #expect(held.nextDueMs == name(12500).timeMs)
        // Still held just after its interval: the first of the next would stand for it.
        let ended = ReplicationPlan(local: [a[3]], done: [], lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000,
                                    holdingOpenAt: name(10001).timeMs)
        #expect(ended.steps.isEmpty)
        // Half an interval after its interval with no newer one, the final state goes.
        let later = ReplicationPlan(local: [a[3]], done: [], lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000,
                                    holdingOpenAt: name(12500).timeMs)
        #expect(later.steps.map(\.name) == [name(5200)])
        #expect(later.nextDueMs == nil)
        // A newer one, of the next interval, passes over the held one instead.
        let next = ReplicationPlan(local: [a[3], .init(name: name(10002), database: "a.db")], done: [],
                                   lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000, holdingOpenAt: name(10100).timeMs)
        #expect(next.steps.map(\.name) == [name(10002)])
        #expect(next.steps[0].passesOver == [name(5200)])
        // Taken once the writer went quiet: sent as soon as its interval has ended.
        let quiet = ReplicationPlan.Candidate(name: name(5200), database: "a.db", quiet: true)
        let ending = ReplicationPlan(local: [quiet], done: [], lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000,
                                     holdingOpenAt: name(9999).timeMs)
        #expect(ending.steps.isEmpty)
        #expect(ending.nextDueMs == name(10000).timeMs)
        let ended2 = ReplicationPlan(local: [quiet], done: [], lastSentCommitMs: ["a.db": name(5100).timeMs], intervalMs: 5000,
                                     holdingOpenAt: name(10000).timeMs)
        #expect(ended2.steps.map(\.name) == [name(5200)])
    }

    @Test func retentionOnTheRepositoryIsTheMountsWithHolds() {
        func replica(_ ms: Int64, held: Bool = false, database: String? = nil) -> ReplicaSnapshot {
            var metadata = SnapshotMetadata(name: name(ms), trigger: Trigger(kind: database == nil ? .command : .sqlite), strategy: "copy",
                                            scope: database == nil ? .tree : .files,
                                            sqlite: database.map { SQLiteCommitInfo(database: $0, journalMode: "wal", sequence: 1, size: 1) })
            metadata.held = held
            return ReplicaSnapshot(id: "id\(ms)", tags: ReplicaSnapshot.tags(for: metadata))
        }
        let replicas = [replica(1, held: true), replica(2), replica(3), replica(4), replica(5, database: "a.db"), replica(6, database: "a.db")]
        #expect(Replicator.toForget(replicas, retention: RetentionPolicy()).isEmpty)
        #expect(Replicator.toForget(replicas, retention: RetentionPolicy(keepLast: 2)).map(\.id) == ["id2", "id3", "id4"])
        #expect(Replicator.toForget(replicas, retention: RetentionPolicy(keepCommits: 1)).map(\.id) == ["id5"])
    }

    @Test func intervalZeroSendsEveryCommit() {
        let a = [1, 2, 3].map { ReplicationPlan.Candidate(name: name($0), database: "a.db") }
        let plan = ReplicationPlan(local: a, done: [], lastSentCommitMs: [:], intervalMs: 0)
        #expect(plan.steps.count == 3)
    }
}

@Suite struct ReplicaTagTests {
    @Test func tagValuesSurviveCommasAndOtherBytes() {
        for text in ["plain", "a,b", "100%", "dir with space/é.db", "x%2Cy", "tab\there"] {
            let encoded = TagText.encode(text)
            #expect(!encoded.contains(","))
            #expect(!encoded.contains(" "))
            #expect(TagText.decode(encoded) == text)
        }
    }

    @Test func tagsOfACommitSnapshotReadBack() {
        var metadata = SnapshotMetadata(name: name(42, "a,b"), trigger: Trigger(kind: .sqlite), strategy: "hardlink",
                                        scope: .files, paths: ["d/app.db"],
                                        sqlite: SQLiteCommitInfo(database: "d/app, one.db", journalMode: "wal", sequence: 3, size: 4096))
        metadata.held = true
        let replica = ReplicaSnapshot(id: String(repeating: "ab", count: 32), tags: ReplicaSnapshot.tags(for: metadata))
        #expect(replica.name == name(42, "a,b"))
        #expect(replica.label == "a,b")
        #expect(replica.triggerKind == "sqlite")
        #expect(replica.scope == .files)
        #expect(replica.database == "d/app, one.db")
        #expect(replica.held)
        #expect(replica.shortID == "abababab")
    }

    @Test func resticSnapshotListDecodes() {
        let json = """
        [{"time":"2026-12-05T07:44:54.36Z","tree":"20","paths":["/b/.snapshots/20261205T074454.000Z"],"hostname":"vm","username":"root",
          "tags":["snapfs","snapfs-name=20261205T074454.000Z","snapfs-trigger=command","snapfs-scope=tree"],"id":"20e6137db4d5","short_id":"20e6137d"},
         {"time":"2026-12-05T07:44:55Z","tree":"21","paths":["/other"],"hostname":"vm","id":"ffff","short_id":"ffff"}]
        """
        let list = ReplicaSnapshot.decodeList(Array(json.utf8))
        #expect(list?.count == 2)
        #expect(list?[0].name?.description == "20261205T074454.000Z")
        #expect(list?[0].scope == .tree)
        #expect(list?[1].name == nil)
        #expect(ReplicaSnapshot.decodeList(Array("null\n".utf8)) == [])
        #expect(ReplicaSnapshot.decodeList(Array("oops".utf8)) == nil)
    }

    @Test func parentIsTheNewestOlderOfTheSameKind() {
        func replica(_ ms: Int64, database: String? = nil) -> ReplicaSnapshot {
            let metadata = SnapshotMetadata(name: name(ms), trigger: Trigger(kind: database == nil ? .command : .sqlite), strategy: "copy",
                                            scope: database == nil ? .tree : .files,
                                            sqlite: database.map { SQLiteCommitInfo(database: $0, journalMode: "wal", sequence: 1, size: 1) })
            return ReplicaSnapshot(id: "id\(ms)", tags: ReplicaSnapshot.tags(for: metadata))
        }
        let replicas = [replica(1), replica(2, database: "a.db"), replica(3), replica(4, database: "b.db"), replica(9)]
        let tree = SnapshotMetadata(name: name(5), trigger: Trigger(kind: .command), strategy: "copy")
        #expect(Replicator.parent(for: tree, among: replicas)?.id == "id3")
        let commitA = SnapshotMetadata(name: name(6), trigger: Trigger(kind: .sqlite), strategy: "copy", scope: .files,
                                       sqlite: SQLiteCommitInfo(database: "a.db", journalMode: "wal", sequence: 2, size: 1))
        #expect(Replicator.parent(for: commitA, among: replicas)?.id == "id2")
        let commitC = SnapshotMetadata(name: name(6), trigger: Trigger(kind: .sqlite), strategy: "copy", scope: .files,
                                       sqlite: SQLiteCommitInfo(database: "c.db", journalMode: "wal", sequence: 2, size: 1))
        #expect(Replicator.parent(for: commitC, among: replicas)?.id == "id3")
        let first = SnapshotMetadata(name: name(0), trigger: Trigger(kind: .command), strategy: "copy")
        #expect(Replicator.parent(for: first, among: replicas) == nil)
    }
}

@Suite struct ResticEnvironmentTests {
    @Test func credentialsGoThroughTheEnvironmentOnly() {
        let caller = ["PATH": "/usr/bin", "HOME": "/root", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
                      "RESTIC_PASSWORD": "pw", "SECRET_OF_MINE": "x", "RESTIC_REPOSITORY_FILE": "/f"]
        let repository = ResticRepository(location: "rest:https://user:pass@host/repo", passwordFile: "/etc/pw", environment: caller)
        let env = Set(repository.environment())
        #expect(env.contains("RESTIC_REPOSITORY=rest:https://user:pass@host/repo"))
        #expect(env.contains("RESTIC_PASSWORD_FILE=/etc/pw"))
        #expect(env.contains("AWS_SECRET_ACCESS_KEY=secret"))
        #expect(env.contains("TZ=UTC"))
        #expect(!env.contains { $0.hasPrefix("RESTIC_PASSWORD=") || $0.hasPrefix("SECRET_OF_MINE=") || $0.hasPrefix("RESTIC_REPOSITORY_FILE=") })
        #expect(repository.shown == "rest:https://***@host/repo")
    }

    @Test func noPasswordIsAClearError() {
        let repository = ResticRepository(location: "/srv/r", environment: ["PATH": "/usr/bin"])
        #expect(throws: ReplicationError.self) { try repository.checkPassword() }
        let missing = ResticRepository(location: "/srv/r", passwordFile: "/nonexistent/pw", environment: [:])
        do {
            try missing.checkPassword()
            Issue.record("a missing password file was accepted")
        } catch {
            #expect(error.kind == .noPassword)
            #expect(error.message.contains("/nonexistent/pw"))
        }
    }

    @Test func resticFailuresAreClassified() {
        let shown = "s3:http://h/b"
        #expect(ReplicationError.restic(status: 1, errorText: "Fatal: wrong password or no key found\n", repository: shown).kind == .wrongPassword)
        let missing = "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?\ns3:http://h/b\n"
        #expect(ReplicationError.restic(status: 1, errorText: missing, repository: shown).kind == .noRepository)
        let down = "Fatal: unable to open config file: Stat: Get \"http://u:p@h/b\": dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?\n"
        let error = ReplicationError.restic(status: 1, errorText: down, repository: shown)
        #expect(error.kind == .unreachable)
        #expect(!error.message.contains("u:p"))
        #expect(ReplicationError.restic(status: 1, errorText: "Fatal: something else\n", repository: shown).kind == .failed)
        let locked = "unable to create lock in backend: repository is already locked exclusively by PID 1 on vm by root\nthe `unlock` command can be used to remove stale locks\n"
        #expect(ReplicationError.restic(status: 1, errorText: locked, repository: shown).message.contains("already locked exclusively by PID 1"))
    }

    @Test func literalPatternsEscapeGlobCharacters() {
        #expect(ResticRepository.literalPattern("/a/b*[c]?\\d") == "/a/b\\*\\[c]\\?\\\\d")
    }
}

@Suite struct ChildProcessTests {
    @Test func runsInTheGivenDirectoryWithTheGivenEnvironment() throws {
        let dir = open("/usr", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(dir) }
        let child = ChildProcess(arguments: ["sh", "-c", "pwd; echo $ONLY; echo $HOME; echo oops >&2; exit 3"],
                                 environment: ["PATH=/usr/bin:/bin", "ONLY=this"], directoryFD: dir)
        let outcome = try child.run()
        #expect(outcome.status == 3)
        #expect(String(decoding: outcome.output, as: UTF8.self) == "/usr\nthis\n\n")
        #expect(outcome.errorText == "oops\n")
    }

    @Test func passesOnNoDescriptorButTheOneGiven() throws {
        // Neither close-on-exec: without the spawner's care both would reach the child.
        let stray = dup2(open("/dev/null", O_RDONLY), 200)
        let lock = dup2(open("/dev/null", O_RDONLY), 201)
        defer { close(stray); close(lock) }
        // The shell's own descriptors (the listing opens one more, for the directory).
        let list = ["sh", "-c", "for f in /proc/$$/fd/*; do echo ${f##*/}; done"]
        let alone = try ChildProcess(arguments: list, environment: ["PATH=/usr/bin:/bin"]).run()
        let aloneFDs = String(decoding: alone.output, as: UTF8.self).split(separator: "\n")
        #expect(!aloneFDs.contains("200") && !aloneFDs.contains("201"))
        let withLock = try ChildProcess(arguments: list, environment: ["PATH=/usr/bin:/bin"], inheritedFD: lock).run()
        let lockFDs = String(decoding: withLock.output, as: UTF8.self).split(separator: "\n")
        #expect(!lockFDs.contains("200") && !lockFDs.contains("201"))
        #expect(lockFDs.count == aloneFDs.count + 1 && lockFDs.contains("3"))
    }

    @Test func keepsTheLastLineOnly() throws {
        let child = ChildProcess(arguments: ["sh", "-c", "for i in 1 2 3; do echo line$i; done"], environment: ["PATH=/usr/bin:/bin"],
                                 lastLineOnly: true)
        #expect(String(decoding: try child.run().output, as: UTF8.self) == "line3")
    }

    @Test func aMissingProgramThrowsENOENT() {
        #expect(throws: (any Error).self) {
            try ChildProcess(arguments: ["snapfs-no-such-program"], environment: []).run()
        }
    }
}

@Suite struct ReplicationRecordTests {
    @Test func writesAtomicallyAndReadsBack() throws {
        var template = Array("/tmp/snapfs-unit-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { _ = system("rm -rf '\(path)'") }
        mkdir(path + "/.snapshots", 0o700)
        let fd = open(path + "/.snapshots", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(fd) }
        #expect(ReplicationRecord.read(snapshotsFD: fd, repositoryID: "abc") == nil)
        var record = ReplicationRecord(repository: "s3:http://h/b", repositoryID: "abc")
        record.replicated = ["n1": "id1", "n2": "id2"]
        record.skipped = ["n0"]
        try record.write(snapshotsFD: fd)
        #expect(ReplicationRecord.read(snapshotsFD: fd, repositoryID: "abc") == record)
        #expect(ReplicationRecord.all(snapshotsFD: fd) == [record])
        record.keepOnly(["n2"])
        #expect(record.replicated == ["n2": "id2"] && record.skipped.isEmpty)
        var st = stat()
        stat(path + "/.snapshots/.meta/replication", &st)
        #expect(st.st_mode & 0o777 == 0o700)
        // No temporary file is left behind.
        let dir = open(path + "/.snapshots/.meta/replication", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(dir) }
        #expect(try DirectoryNames.utf8Names(in: dir) == ["abc.json"])
    }
}
