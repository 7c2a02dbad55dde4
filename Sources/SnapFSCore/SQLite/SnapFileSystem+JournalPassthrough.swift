import Glibc
import SnapFSSQLite
import SystemPackage

/// Rollback journals the kernel writes itself (FUSE passthrough of a writable file).
///
/// In DELETE mode a transaction writes its journal in many small writes (the header, then
/// a page number, the page and a checksum for each page) and reads a little of it back:
/// 9 of the 25 requests a one-row transaction waits for (two come back: the FLUSH below,
/// and one more `security.capability` question of the kernel's; 18 are left, counted with
/// `--debug`). None of them is a commit:
/// a DELETE-mode transaction ends when the journal is removed, which is a request like
/// any other (and `sqliteRemoval` reads the header from the backing file, where the
/// kernel's writes are). So once a database's last journal ended by its removal, its
/// next journal, when it is created, is handed to the kernel to write directly.
///
/// A connection may change its mode meanwhile, and then the journal ends another way:
/// - truncated (TRUNCATE): a request (setattr), seen as always;
/// - its header zeroed (PERSIST, or any mode with `locking_mode=EXCLUSIVE`): a write the
///   daemon no longer sees. It is found at the next of: the journal's fsync (SQLite syncs
///   a zeroed header unless `synchronous=OFF`), its close (FLUSH, which such a journal
///   asks for; SQLite closes it before it unlocks unless the lock is exclusive), or the
///   next write to the database, which comes after the next transaction rewrote the
///   header with a new random nonce (bytes 12–15) and before it changed the database: the
///   database file then holds the previous commit exactly, and is snapshotted before the
///   write. Each of these reads 16 bytes of the header.
/// After such an ending the database's journals are written through the daemon again.
/// A header is trusted only once it has been seen hot; a ROLLBACK ends the journal as a
/// commit does and is told from one by the database file not having changed (`decide`).
extension SnapFileSystem {
    /// At create: whether the journal `node` (named `name` in `dir`) goes to the kernel,
    /// and the database's node id it belongs to.
    func journalForKernel(_ node: Inode, fd: Int32, name: UnsafePointer<CChar>, in dir: Inode,
                          flags: Int32) -> (offer: () -> Int32?, database: UInt64)? {
        guard options.kernelPassthrough, sqlite.isActive, flags & O_ACCMODE != O_RDONLY,
              node.sqlite.role.load(ordering: .relaxed) == SQLiteRole.journal.rawValue,
              let (companion, database) = Self.companion(named: name), companion == .journal,
              sqlite.removesJournals(DatabaseLocation(directory: dir, name: database)) else { return nil }
        // The database the kernel knows (its writes are where a missed ending is found).
        let key = try? regularFileKey(database, in: dir)
        guard let key = key ?? nil, let id = inodes.id(of: key, snapshotView: false) else { return nil }
        return passthroughOffer(forJournal: node, fd: fd).map { ($0, id) }
    }

    /// Reads the header of a journal the kernel writes: the commit it shows ended, if any.
    /// `nonceChange`: a hot header with a new nonce also ends the transaction seen before
    /// (at a database write, where the new transaction has not changed the database yet).
    func kernelWrittenJournalEnded(_ file: OpenFile, nonceChange: Bool) -> SQLiteCommit? {
        var header = (UInt64(0), UInt64(0))
        let n = withUnsafeMutableBytes(of: &header) { DescriptorReader(fd: file.fd).read(into: $0, at: 0) }
        let bytes = withUnsafeBytes(of: &header) { Array($0) }
        let seen = file.inode.sqlite.journalHeader.load(ordering: .acquiring)
        if n == bytes.count && SQLiteFormat.isHotJournalHeader(bytes),
           let nonce = bytes.withUnsafeBytes({ SQLiteFormat.bigEndian32($0, at: 12) }) {
            let now = 1 << 32 | UInt64(nonce)
            file.inode.sqlite.journalHeader.store(now, ordering: .releasing)
            guard nonceChange, seen != 0, seen != now else { return nil }
        } else {
            // Zeroed, truncated or not written yet: an ending only after a hot header.
            guard seen != 0 else { return nil }
        }
        return journalEnded(file.inode, mode: .persist)
    }

    /// A journal ended some other way than by its removal: the commit, and the database's
    /// next journals come to the daemon again.
    func journalEnded(_ node: Inode, mode: JournalMode) -> SQLiteCommit? {
        node.sqlite.journalHeader.store(0, ordering: .releasing)
        guard let commit = journalCommit(node, mode: mode) else { return nil }
        sqlite.journalKept(of: commit.location)
        return commit
    }

    /// At fsync and close of a journal the kernel writes.
    func checkKernelWrittenJournal(_ file: OpenFile) {
        guard file.kernelWrites, file.inode.sqlite.role.load(ordering: .relaxed) == SQLiteRole.journal.rawValue,
              let commit = kernelWrittenJournalEnded(file, nonceChange: false) else { return }
        sqliteCommitted(commit, serving: file.inode.id)
    }

    /// Before a write to a database whose journal the kernel writes.
    @inline(__always)
    func checkJournalBeforeDatabaseWrite(_ file: OpenFile) {
        guard let journal = sqliteNodes.kernelWrittenJournal(ofDatabase: file.inode.id),
              let commit = kernelWrittenJournalEnded(journal, nonceChange: true) else { return }
        sqliteCommitted(commit, serving: file.inode.id)
    }
}
