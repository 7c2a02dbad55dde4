import CLinux
import Glibc
import SnapFSBacking
import SnapFSSQLite
import SystemPackage

/// Regular-file operations: open, create, read, write, sync, allocation, copy, seek.
extension SnapFileSystem {
    /// Flags the backing descriptor is opened with, given the caller's flags.
    /// O_DIRECT stays with the kernel (which then sends every request through): the
    /// daemon's request buffers are not aligned as direct I/O on the backing file needs.
    func backingFlags(_ flags: Int32) -> Int32 {
        var flags = flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY | SNAPFS_O_DIRECT)
        if options.kernelWritebackCache || cache != nil {
            // The kernel (with write-back caching) and the page cache read pages around a
            // partial write even on a write-only file, and position appends themselves.
            if flags & O_ACCMODE == O_WRONLY { flags = (flags & ~O_ACCMODE) | O_RDWR }
            flags &= ~O_APPEND
        }
        return flags
    }

    public func open(_ inode: UInt64, flags: Int32, context: RequestContext) throws(Errno) -> OpenFile {
        let node = try inodes.inode(inode)
        if node.isDirectory && flags & O_ACCMODE != O_RDONLY { throw Errno.isDirectory }
        if node.inSnapshotView && (flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0) { throw Errno.readOnlyFileSystem }
        let charge = try handles.charge(context.uid, .file)
        let open = { () throws(Errno) -> OpenFile in
            let fd = try node.withFD { (pathFD) throws(Errno) in try self.proc.reopen(pathFD, flags: self.backingFlags(flags)) }
            if flags & O_TRUNC != 0 {
                self.dropPrivileges(fd, of: node, caller: context)
                if let cache = self.cacheHolding(node) {
                    do throws(Errno) { try cache.truncate(node.id, to: 0, backing: self.cacheStore) } catch { close(fd); throw error }
                }
            }
            return self.openFile(node, fd: fd, flags: flags, offer: self.passthroughOffer(for: node, fd: fd, flags: flags),
                                 charge: charge)
        }
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != O_RDONLY {
            return try mutate(.truncateOnOpen(inode: node), open)
        }
        if options.readOnly && flags & O_ACCMODE != O_RDONLY { throw Errno.readOnlyFileSystem }
        // Passthrough starts inside the gate, so that no snapshot is being built meanwhile.
        if passthroughKernel.value != nil { return try snapshotState.gate.pass(open) }
        return try open()
    }

    /// An ``OpenFile`` of `node`, which joins the inode's passthrough mode if it is in one.
    func openFile(_ node: Inode, fd: Int32, flags: Int32, writesThrough: Bool = false,
                  offer: (() -> Int32?)? = nil, charge: HandleCharge? = nil) -> OpenFile {
        noteCachedLogOpened(node, flags: flags)
        return OpenFile(inode: node, fd: fd, flags: flags, writesThrough: writesThrough, offer: offer,
                 direct: { [unowned self] in self.bypassesKernelCacheWhenFirstOpened(node, flags: flags) },
                 passthroughEnded: { [weak self] node, ended in self?.passthroughEnded(node, ended) },
                 charge: charge)
    }

    /// Creates and opens `name` in `parent` (open with O_CREAT).
    public func create(parent: UInt64, name: UnsafePointer<CChar>, mode: mode_t, flags: Int32,
                       context: RequestContext) throws(Errno) -> (Entry, OpenFile) {
        let dir = try inodes.inode(parent)
        let mode = creationMode(mode & 0o7777, in: dir, context: context)
        // Counted before the file is made: a user at the bound gets EMFILE and no new file.
        let charge = try handles.charge(context.uid, .file)
        return try mutate(.createEntry(parent: dir, name: name)) { () throws(Errno) -> (Entry, OpenFile) in
            let fd = try dir.withFD { (dirFD) throws(Errno) in
                try syscallRetrying { snapfs_openat(dirFD, name, (backingFlags(flags) | O_CREAT | O_CLOEXEC | O_NOFOLLOW), mode) }
            }
            do throws(Errno) {
                let entry = try adopt(name, in: dir, mode: S_IFREG | (mode & 0o7777), context: context)
                let node = try inodes.inode(entry.inode)
                let kernel = journalForKernel(node, fd: fd, name: name, in: dir, flags: flags)
                let file = openFile(node, fd: fd, flags: flags, writesThrough: writesThroughWhenCreated(flags),
                                    offer: kernel?.offer, charge: charge)
                if let kernel, file.kernelWrites { sqliteNodes.linkJournal(file, toDatabase: kernel.database); sqlite.journalsPassedThrough.add(1, ordering: .relaxed) }
                return (entry, file)
            } catch {
                close(fd)
                throw error
            }
        }
    }

    /// open(2) with O_TMPFILE in `parent`: an unnamed file that linkat(2) can name later
    /// (unless O_EXCL). The kernel holds an inode for it like for any other file.
    public func tmpfile(parent: UInt64, mode: mode_t, flags: Int32,
                        context: RequestContext) throws(Errno) -> (Entry, OpenFile) {
        let dir = try inodes.inode(parent)
        guard dir.isDirectory else { throw Errno.notDirectory }
        let mode = creationMode(mode & 0o7777, in: dir, context: context)
        let flags = flags & ~SNAPFS_O_TMPFILE
        let charge = try handles.charge(context.uid, .file)
        // The mutation names its entry by a pointer that must stay valid for the whole call.
        return try ".".withCName { (dot) throws(Errno) -> (Entry, OpenFile) in
            try mutate(.createEntry(parent: dir, name: dot)) { () throws(Errno) -> (Entry, OpenFile) in
                let fd = try dir.withFD { (dirFD) throws(Errno) in
                    try syscallRetrying { snapfs_openat(dirFD, ".", backingFlags(flags) | (flags & O_EXCL) | SNAPFS_O_TMPFILE | O_CLOEXEC, mode) }
                }
                do throws(Errno) {
                    if let (uid, gid) = try ownerOfNewObject(in: dir, context: context) {
                        try syscall(fchown(fd, uid, gid))
                        if mode & (S_ISUID | S_ISGID) != 0 { try syscall(fchmod(fd, mode)) }
                    }
                    let pathFD = try proc.reopen(fd, flags: SNAPFS_O_PATH)
                    let st: stat
                    do throws(Errno) { st = try FileStatus.of(pathFD) } catch { close(pathFD); throw error }
                    let node = inodes.reference(fd: pathFD, status: st)
                    return (Entry(inode: node.id, attributes: st), openFile(node, fd: fd, flags: flags,
                                                                          writesThrough: writesThroughWhenCreated(flags),
                                                                          charge: charge))
                } catch {
                    close(fd)
                    throw error
                }
            }
        }
    }

    public func read(_ file: OpenFile, offset: Int64, size: Int) throws(Errno) -> ReadData {
        if let cache = cacheHoldingDirty(file.inode) { return try cachedRead(cache, file, offset: offset, size: size) }
        return .file(fd: file.fd, offset: offset, length: size)
    }

    /// Writes all of `data` at `offset`; returns the bytes written. Where the data goes is
    /// decided here: the page cache, or the backing file (a file the kernel reads directly,
    /// a SQLite journal or WAL, a file written through).
    public func write(_ file: OpenFile, _ data: UnsafeRawBufferPointer, offset: Int64,
                      context: RequestContext) throws(Errno) -> Int {
        try mutate(.write(file: file, data: data, offset: offset)) { (notes: inout MutationNotes) throws(Errno) -> Int in
            dropPrivileges(file.fd, of: file.inode, caller: context)
            // The kernel's write-back (its cache batched the writes already) goes straight to
            // the file, unless snapfs's cache holds pages of it (refused write-backs, dirty or
            // written since): then through the cache, behind them and keeping them current.
            let kernelWriteBack = options.kernelWritebackCache && !writesBypassKernelCache(file)
            if let cache, !file.bypassesCache, kernelWriteBack ? cacheHolding(file.inode) != nil : caches(file.inode) {
                return try CallerIdentity.allocating(as: context.uid) { () throws(Errno) in
                    try cachedWrite(cache, file, data, offset: offset)
                }
            }
            var done = 0
            while done < data.count {
                let n: Int
                do throws(Errno) {
                    n = try CallerIdentity.allocating(as: context.uid) { () throws(Errno) in
                        try syscallRetrying { pwrite(file.fd, data.baseAddress! + done, data.count - done, off_t(offset) + done) }
                    }
                } catch where kernelWriteBack && cache != nil {
                    // Refused (a full disk, a quota, past the file size limit): held, and
                    // reported by fsync and close as the cache reports its own write-backs.
                    notes.writtenThrough = done
                    return try holdRefusedWriteBack(file, UnsafeRawBufferPointer(rebasing: data[done...]), offset: offset + Int64(done),
                                                    context: context) + done
                }
                if n == 0 { break }
                done += n
            }
            notes.writtenThrough = done
            return done
        }
    }

    /// close(2) of one descriptor of an open file.
    public func flush(_ file: OpenFile) throws(Errno) {
        checkKernelWrittenJournal(file)
        try cachedFlush(file)
        restoreKernelModificationTime(file)
    }

    /// The last descriptor of an open file is gone.
    public func release(_ file: OpenFile) {
        cachedRelease(file)
    }

    public func fsync(_ file: OpenFile, dataOnly: Bool) throws(Errno) {
        defer { sqliteNodes.noteSynced(file.inode.id) }
        if let cache = cacheHolding(file.inode) {
            try cache.fsync(file.inode.id, dataOnly: dataOnly, backing: cacheStore)
            restoreKernelModificationTime(file)
            return
        }
        try syscallRetrying { dataOnly ? fdatasync(file.fd) : Glibc.fsync(file.fd) }
        checkKernelWrittenJournal(file)
    }

    /// fallocate(2) with any mode the backing filesystem supports (keep size, punch hole, zero range…).
    public func fallocate(_ file: OpenFile, mode: Int32, offset: Int64, length: Int64,
                          context: RequestContext) throws(Errno) {
        try mutate(.writeData(inode: file.inode, offset: offset, length: length)) { () throws(Errno) in
            dropPrivileges(file.fd, of: file.inode, caller: context)
            let cache = try writeBackBeforeDirectChange(file.inode)
            defer { try? forgetCachedPages(of: file.inode, in: cache) }
            try CallerIdentity.allocating(as: context.uid) { () throws(Errno) in
                _ = try syscallRetrying { snapfs_fallocate(file.fd, mode, off_t(offset), off_t(length)) }
            }
        }
    }

    public func copyFileRange(from source: OpenFile, at sourceOffset: Int64, to target: OpenFile,
                              at targetOffset: Int64, length: Int, flags: UInt32,
                              context: RequestContext) throws(Errno) -> Int {
        try mutate(.writeData(inode: target.inode, offset: targetOffset, length: Int64(length))) { () throws(Errno) -> Int in
            dropPrivileges(target.fd, of: target.inode, caller: context)
            _ = try writeBackBeforeDirectChange(source.inode)
            let cache = try writeBackBeforeDirectChange(target.inode)
            defer { try? forgetCachedPages(of: target.inode, in: cache) }
            var inOffset = off_t(sourceOffset)
            var outOffset = off_t(targetOffset)
            return try CallerIdentity.allocating(as: context.uid) { () throws(Errno) in
                try syscallRetrying { snapfs_copy_file_range(source.fd, &inOffset, target.fd, &outOffset, length, flags) }
            }
        }
    }

    /// lseek(2) for SEEK_DATA / SEEK_HOLE (the kernel answers SEEK_SET/CUR/END itself).
    public func lseek(_ file: OpenFile, offset: Int64, whence: Int32) throws(Errno) -> Int64 {
        // Where the data is depends on every write: the kernel's cached ones come first
        // (it does not write them back before asking, as it does for fallocate and
        // copy_file_range), then snapfs's.
        if options.kernelWritebackCache { kernel.value?.pushDirtyPages(of: [file.inode.id]) }
        _ = try writeBackBeforeDirectChange(file.inode)
        return Int64(try syscall(Glibc.lseek(file.fd, off_t(offset), whence)))
    }

    /// What a local filesystem does to a file whose data changes: a caller without
    /// CAP_FSETID (the owner too) loses the set-user-ID bit, and the
    /// set-group-ID bit if the file is group-executable or the caller is not in the
    /// file's group (Linux ≥ 6.2, `setattr_should_drop_sgid`); file capabilities are
    /// dropped. The kernel leaves this to snapfs (FUSE_HANDLE_KILLPRIV_V2, see FUSEChannel),
    /// and keeps the mode it cached (for a day): so when a bit drops, the kernel is told
    /// to fetch the attributes again, or the mount would still show (and exec would still
    /// honour) the set-ID bit that the backing file no longer has.
    func dropPrivileges(_ fd: Int32, of node: Inode, caller: RequestContext) {
        guard let st = try? FileStatus.withoutTimes(fd), st.isRegular else { return }
        if st.st_mode & (S_ISUID | S_ISGID) != 0, !caller.holdsFileSetID {
            let mode = Self.modeAfterWrite(st.st_mode & 0o7777, fileGroup: st.st_gid, caller: caller)
            if mode != st.st_mode & 0o7777, fchmod(fd, mode) == 0 {
                kernel.value?.invalidateAttributes(of: node.id)
            }
        }
        // Capabilities only mean something on executables; skip the syscall otherwise.
        if st.st_mode & 0o111 != 0 { _ = fremovexattr(fd, "security.capability") }
    }

    /// The set-ID bits an unprivileged caller's write leaves on a file.
    static func modeAfterWrite(_ mode: mode_t, fileGroup: gid_t, caller: RequestContext) -> mode_t {
        var mode = mode & ~S_ISUID
        if mode & S_ISGID != 0 && (mode & S_IXGRP != 0 || !caller.isMember(of: fileGroup)) {
            mode &= ~S_ISGID
        }
        return mode
    }
}
