import CLinux
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// Copy-up: with hard-link snapshots a live file and its snapshot share one backing object,
/// so before the first change after a snapshot the live name gets a private copy (as
/// overlayfs copies up a lower file). The kernel's inode for the file stays the same — the
/// ``Inode`` moves to the copy, and every descriptor open on the file is moved with it —
/// while the snapshot keeps the original object, unchanged.
///
/// Files the user hard-linked to each other inside the tree: the copy replaces the name
/// through which the file was last reached; the other names keep the object the snapshot
/// shares, and get their own copy at their own first change. So after a snapshot, such
/// names stop being links to each other (documented in the README).
extension SnapFileSystem {
    /// Makes sure a change to `inode` cannot reach a snapshot. Inside the freeze gate.
    @inline(__always)
    func breakSharing(_ inode: Inode, keepingData: Bool) throws(Errno) {
        guard inode.isRegularFile, snapshotState.sharesBackingObjects,
              inode.copyUp.privateGeneration.load(ordering: .acquiring) < snapshotState.currentGeneration else { return }
        try copyUp(inode, keepingData: keepingData)
    }

    private func copyUp(_ inode: Inode, keepingData: Bool) throws(Errno) {
        let started = SnapshotEngine.monotonicUs()
        defer { inode.copyUp.costUs.add(SnapshotEngine.monotonicUs() - started, ordering: .relaxed) }
        try snapshotState.copyUpLock.withLock { (_: inout Void) throws(Errno) in
            let generation = snapshotState.currentGeneration
            let st = try backingAttributes(of: inode)
            let name = liveName(of: inode, status: st)
            if ownsBackingObject(inode, status: st, name: name) { return }
            let dir = name?.parent ?? inodes.root
            let copy = try dir.withFD { (dirFD) throws(Errno) in
                try syscallRetrying { snapfs_openat(dirFD, ".", SNAPFS_O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600) }
            }
            defer { close(copy) }
            let source = try inode.withFD { (fd) throws(Errno) in try proc.reopen(fd, flags: O_RDONLY) }
            defer { close(source) }
            if keepingData { try FileCopy.copyData(from: source, to: copy, size: Int64(st.st_size)) }
            try FileCopy.copyExtendedAttributes(from: source, to: copy)
            try syscall(fchown(copy, st.st_uid, st.st_gid))
            try syscall(fchmod(copy, st.st_mode & 0o7777))
            var times = [st.st_atim, st.st_mtim]
            try syscall(futimens(copy, &times))
            if let name {
                // Replacing the name changes the directory: a background build takes it first.
                if let capture = snapshotState.activeCapture { try dir.withFD { (fd) throws(Errno) in capture.captureDirectory(fd) } }
                try replace(name.name, in: dir, with: copy, expecting: BackingKey(st))
            }
            let pathFD = try proc.reopen(copy, flags: SNAPFS_O_PATH)
            let newKey: BackingKey
            do throws(Errno) { newKey = BackingKey(try FileStatus.of(pathFD)) } catch { close(pathFD); throw error }
            let oldKey = try inode.replaceBacking(with: pathFD, key: newKey) { (fd, flags) throws(Errno) in
                try self.proc.reopen(fd, flags: self.backingFlags(flags) & ~O_TRUNC)
            }
            inodes.rekey(inode, from: oldKey)
            if inode.copyUp.reportedInode.load(ordering: .relaxed) == 0 { inode.copyUp.reportedInode.store(oldKey.inode, ordering: .relaxed) }
            inode.copyUp.privateGeneration.store(generation, ordering: .releasing)
            logger.debug("copy-up of inode \(inode.id): backing \(oldKey.inode) -> \(newKey.inode)")
        }
    }

    /// Whether no snapshot shares `inode`'s backing object, as far as snapfs knows; marks it
    /// so. No link at all: not in any snapshot. One link that is its live name: likewise.
    /// In passthrough mode: snapshots copy the object (see Passthrough.swift).
    func ownsBackingObject(_ inode: Inode) -> Bool {
        let generation = snapshotState.currentGeneration
        if !snapshotState.sharesBackingObjects || inode.copyUp.privateGeneration.load(ordering: .acquiring) >= generation {
            return true
        }
        guard let st = try? backingAttributes(of: inode) else { return false }
        return ownsBackingObject(inode, status: st, name: liveName(of: inode, status: st))
    }

    private func ownsBackingObject(_ inode: Inode, status st: stat, name: (parent: Inode, name: [CChar])?) -> Bool {
        let generation = snapshotState.currentGeneration
        if inode.copyUp.privateGeneration.load(ordering: .acquiring) >= generation { return true }
        guard st.st_nlink == 0 || (st.st_nlink == 1 && name != nil) || inode.inPassthroughMode else { return false }
        inode.copyUp.privateGeneration.store(generation, ordering: .releasing)
        return true
    }

    /// The remembered name of `inode`, if it still names the same object.
    private func liveName(of inode: Inode, status st: stat) -> (parent: Inode, name: [CChar])? {
        guard let name = inode.rememberedName else { return nil }
        let current = try? name.parent.withFD { (dirFD) throws(Errno) -> stat in
            try name.name.withUnsafeBufferPointer { (buffer) throws(Errno) -> stat in
                var found = stat()
                try syscall(fstatat(dirFD, buffer.baseAddress!, &found, AT_SYMLINK_NOFOLLOW))
                return found
            }
        }
        guard let current, BackingKey(current) == BackingKey(st) else { return nil }
        return name
    }

    /// Puts the unnamed file `copy` in place of `name` in `dir`, atomically, provided
    /// `name` still names the object `expected` (a rename in between would make it name
    /// something else; then the names are swapped back and the copy-up fails).
    private func replace(_ name: [CChar], in dir: Inode, with copy: Int32, expecting expected: BackingKey) throws(Errno) {
        let temporary = ".snapfs-copy-up-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try dir.withFD { (dirFD) throws(Errno) in
            try proc.withName(of: copy) { procName throws(Errno) in
                _ = try syscall(linkat(proc.directory, procName, dirFD, temporary, AT_SYMLINK_FOLLOW))
            }
            try name.withUnsafeBufferPointer { (buffer) throws(Errno) in
                let exchanged = snapfs_renameat2(dirFD, temporary, dirFD, buffer.baseAddress!, UInt32(SNAPFS_RENAME_EXCHANGE))
                if exchanged != 0 {
                    let error = Errno.current
                    unlinkat(dirFD, temporary, 0)
                    throw error
                }
                var old = stat()
                if fstatat(dirFD, temporary, &old, AT_SYMLINK_NOFOLLOW) != 0 || BackingKey(old) != expected {
                    _ = snapfs_renameat2(dirFD, temporary, dirFD, buffer.baseAddress!, UInt32(SNAPFS_RENAME_EXCHANGE))
                    unlinkat(dirFD, temporary, 0)
                    logger.error("copy-up: a name changed while its file was copied; the change was refused")
                    throw Errno.ioError
                }
            }
            _ = try syscall(unlinkat(dirFD, temporary, 0))
        }
    }

    /// After a rename: the inode the kernel holds for the object now at `name` (if any)
    /// remembers that name, for a later copy-up.
    func rememberName(_ name: UnsafePointer<CChar>, in dir: Inode) {
        var st = stat()
        let found = (try? dir.withFD { fd in fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 }) ?? false
        guard found, st.fileType == S_IFREG,
              let id = inodes.id(of: BackingKey(st), snapshotView: false),
              let inode = try? inodes.inode(id) else { return }
        inode.remember(name: name, in: dir)
    }
}

/// What copy-up keeps per inode (``Inode/copyUp``).
struct CopyUpNodeState: ~Copyable, Sendable {
    /// The snapshot generation up to which this inode's backing object is known to be its
    /// own (not shared by hard link with a snapshot); see ``SnapshotState``.
    let privateGeneration: Atomic<UInt64>
    /// The `st_ino` applications see, once a copy-up moved the inode to a new backing
    /// object (0 before): the first object's number, so the file does not seem replaced
    /// (SQLite, for one, stops writing a database whose path names another inode number).
    let reportedInode = Atomic<UInt64>(0)
    /// Microseconds spent copying this file up since the SQLite policy last took them: for
    /// a database, part of what its previous commit snapshot cost the application.
    let costUs = Atomic<Int64>(0)

    init(privateGeneration: UInt64) {
        self.privateGeneration = Atomic(privateGeneration)
    }
}
