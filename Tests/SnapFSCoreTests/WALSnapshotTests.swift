import Glibc
@testable import SnapFSSnapshots
@testable import SnapFSSQLite
import Testing

/// A database's snapshot in WAL mode is its file with every committed page of the log laid
/// over it, marked as a rollback-journal database: checked by SQLite itself.
@Suite struct WALSnapshotTests {
    /// 1 KiB pages, 40 rows of 300 bytes per transaction: the table's pages come in a run
    /// of consecutive pages longer than one write of the snapshot takes, apart from page 1
    /// (the schema), with another table's pages between them that only the database file
    /// holds. Checkpoints are off, so every row of `t` is in the log.
    @Test func aSnapshotHoldsEveryCommittedRowOfTheLog() throws {
        let recorded = try #require(RecordedWAL.make(transactions: 30, pageSize: 1024, rowsPerTransaction: 40, filler: 50))
        var tracker = WALTracker()
        _ = recorded.replay(into: MemoryFile(), tracker: &tracker)
        let pages = tracker.committedPages.keys.sorted()
        let longest = zip(pages, pages.dropFirst()).reduce(into: (run: 1, best: 1)) { state, pair in
            state.run = pair.1 == pair.0 + 1 ? state.run + 1 : 1
            state.best = max(state.best, state.run)
        }.best
        #expect(longest * recorded.pageSize > SnapshotEngine.bytesPerFrameRun)
        #expect(pages.count > longest)

        let dir = TemporaryDirectory()
        defer { dir.remove() }
        for (name, bytes) in [("app.db", recorded.database), ("app.db-wal", recorded.wal)] {
            let fd = open(dir.path + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) } == bytes.count)
            close(fd)
        }
        var options = SnapshotOptions()
        options.strategy = .copy
        let engine = try SnapshotEngine(backingPath: dir.path, state: SnapshotState(), options: options)
        let source = DatabaseSnapshotSource(file: open(dir.path + "/app.db", O_RDONLY | O_CLOEXEC), path: "app.db",
                                            pageSize: recorded.pageSize, walFile: open(dir.path + "/app.db-wal", O_RDONLY | O_CLOEXEC),
                                            wal: tracker)
        let info = SQLiteCommitInfo(database: "app.db", journalMode: "wal", sequence: 31,
                                    size: Int64(tracker.committedDatabasePages) * Int64(recorded.pageSize))
        let metadata = try engine.takeDatabase(source, trigger: Trigger(kind: .sqlite), info: info)
        let snapshot = dir.path + "/.snapshots/" + metadata.name + "/app.db"
        let check = """
        import sqlite3, sys
        c = sqlite3.connect('file:\(snapshot)?mode=ro', uri=True)
        ok = c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        rows = c.execute('SELECT count(*), min(n), max(n) FROM t').fetchone()
        filler = c.execute('SELECT count(*) FROM f').fetchone()[0]
        sys.exit(0 if ok and rows == (1200, 1, 1200) and filler == 50 else 1)
        """
        #expect(system("python3 '\(dir.file("check.py", contents: check))'") == 0)
        #expect(access(dir.path + "/.snapshots/" + metadata.name + "/app.db-wal", F_OK) != 0)
    }
}
