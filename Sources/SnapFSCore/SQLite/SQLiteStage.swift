import SnapFSSQLite
import SystemPackage

/// SQLite commit detection on the change path (see `SnapFileSystem+SQLite`): before a
/// change, what it may end (a hot journal's header zeroed or truncated, a journal removed,
/// a kernel-written journal whose database is written again); after it, the commit it made;
/// once the gate is open again, the commit's snapshot.
struct SQLiteStage: MutationStage {
    @inline(__always)
    func prepare(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        switch mutation {
        case let .write(file, _, _):
            fs.checkJournalBeforeDatabaseWrite(file)
            fs.pullLogBeforeDatabaseWrite(file)
        case let .removeEntry(dir, name, false):
            notes.removal = fs.sqliteRemoval(of: name, in: dir)
        default:
            break
        }
    }

    @inline(__always)
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        switch mutation {
        case let .write(file, data, offset):
            if file.inode.sqlite.role.load(ordering: .relaxed) != 0 {
                notes.endsJournal = fs.sqliteWriteEndsJournal(file, data, offset: offset)
            }
        case let .setAttributes(inode, size?):
            notes.endsJournal = fs.sqliteTruncationCommits(inode, to: size)
        default:
            break
        }
    }

    @inline(__always)
    func after(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {
        switch mutation {
        case let .write(file, data, offset):
            // Only a write that reached the backing file ends anything (a journal's or WAL's
            // writes do, see `SnapFileSystem.caches`).
            guard let written = notes.writtenThrough, file.inode.sqlite.role.load(ordering: .relaxed) != 0 else { return }
            notes.commit = fs.sqliteWritten(file, UnsafeRawBufferPointer(rebasing: data[0..<written]), offset: offset,
                                            endingJournal: notes.endsJournal)
        case let .setAttributes(inode, size?):
            notes.commit = fs.sqliteTruncated(inode, to: size, endingJournal: notes.endsJournal)
        case .rename, .removeEntry(_, _, true):
            if fs.sqlite.isActive { fs.sqliteNodes.namesChanged() }
        default:
            break
        }
    }

    @inline(__always)
    func finish(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {
        if case let .removeEntry(dir, _, false) = mutation, let removal = notes.removal {
            fs.sqliteRemoved(removal, in: dir)
        }
        guard let commit = notes.commit else { return }
        switch mutation {
        case let .write(file, _, _): fs.sqliteCommitted(commit, serving: file.inode.id)
        case let .setAttributes(inode, _): fs.sqliteCommitted(commit, serving: inode.id)
        default: fs.sqliteCommitted(commit, serving: nil)
        }
    }
}
