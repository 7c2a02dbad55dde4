import SnapFSSQLite
import SnapFSSnapshots
import SystemPackage

/// One feature's part in every change (``Mutation``), in four steps around the freeze gate.
/// A stage keeps its own state where it lives; the filesystem it serves is handed to each step.
/// The stages run in the order of ``MutationPipeline``; a step a stage does not need is
/// left to the default (nothing).
protocol MutationStage: Sendable {
    /// Before the gate: may refuse the change (throws), and may note what a later step needs.
    func prepare(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno)
    /// Inside the gate, before the change reaches the backing store: may refuse it.
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno)
    /// Inside the gate, once the change is made.
    func after(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem)
    /// After the gate opened again, once the change is made (a snapshot taken here closes
    /// the gate itself).
    func finish(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem)
}

extension MutationStage {
    func prepare(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {}
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {}
    func after(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {}
    func finish(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {}
}

/// What the steps of one change hand each other, and what the change itself reports.
struct MutationNotes {
    /// Set by the change: the bytes a write put in the backing file itself (nil when it
    /// went into the page cache, or was not a write).
    var writtenThrough: Int?
    /// SQLite: the write or truncation ends a hot journal (PERSIST, TRUNCATE).
    var endsJournal = false
    /// SQLite: the companion file an unlink removes.
    var removal: SQLiteRemoval?
    /// SQLite: the commit the change made, snapshotted once the gate is open.
    var commit: SQLiteCommit?
}

/// The stages every change passes, in order:
/// 1. ``NamespaceStage``: a read-only mount, `.snapshots/` and the reserved names refuse.
/// 2. ``CaptureStage``: a tree snapshot being built in the background takes what is about to
///    change first (copy-before-write).
/// 3. ``CopyUpStage``: an object a hard-link snapshot shares gets its own copy first.
/// 4. ``ChangeTrackingStage``: the next snapshot has something to take; written ranges of
///    databases cloned by range.
/// 5. the ``MutationObserver`` given to the filesystem, if any.
/// 6. ``SQLiteStage``: commit detection (journals, WAL frames) and the commit's snapshot.
/// The data's own path (page cache, passthrough, the backing file) is the change itself,
/// decided by the operation (`SnapFileSystem+Files`, `+Cache`, `Passthrough`).
struct MutationPipeline: Sendable {
    let stages: [any MutationStage]

    init(readOnly: Bool, observer: (any MutationObserver)?) {
        var stages: [any MutationStage] = [NamespaceStage(readOnly: readOnly), CaptureStage(), CopyUpStage(), ChangeTrackingStage()]
        if let observer { stages.append(ObserverStage(observer: observer)) }
        stages.append(SQLiteStage())
        self.stages = stages
    }

    /// Runs `change` through every stage around `fs`'s freeze gate.
    @inline(__always)
    func run<T>(_ mutation: Mutation, in fs: SnapFileSystem,
                _ change: (inout MutationNotes) throws(Errno) -> T) throws(Errno) -> T {
        var notes = MutationNotes()
        for stage in stages { try stage.prepare(mutation, &notes, in: fs) }
        let result = try fs.snapshotState.gate.pass { () throws(Errno) -> T in
            for stage in stages { try stage.before(mutation, &notes, in: fs) }
            let result = try change(&notes)
            for stage in stages { stage.after(mutation, &notes, in: fs) }
            return result
        }
        for stage in stages { stage.finish(mutation, &notes, in: fs) }
        return result
    }
}
