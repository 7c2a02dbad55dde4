import CLinux
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import SystemPackage

/// Operations on names: lookup, creation of non-regular objects, removal, rename, links.
extension SnapFileSystem {
    /// Resolves `name` in `parent`, adding one kernel reference to the result.
    public func lookup(parent: UInt64, name: UnsafePointer<CChar>) throws(Errno) -> Entry {
        let dir = try inodes.inode(parent)
        return try entry(named: name, in: dir)
    }

    /// Opens `name` in `dir` as `SNAPFS_O_PATH` and references its inode.
    func entry(named name: UnsafePointer<CChar>, in dir: Inode) throws(Errno) -> Entry {
        if dir.inSnapshotView, let entry = try previousVersionsEntry(named: name, in: dir) { return entry }
        return try entry(backingName: name, in: dir, previousVersions: dir.inPreviousVersions)
    }

    /// `.snapshots/.gmt` and the tokens in it (see ``PreviousVersions``), whose names are
    /// not the backing names; nil for any other name, which is looked up as it is.
    private func previousVersionsEntry(named name: UnsafePointer<CChar>, in dir: Inode) throws(Errno) -> Entry? {
        if dir.inPreviousVersions {
            // Inside a version, names are the snapshot's own.
            guard snapshotState.isStore(dir.key) else { return nil }
            // `.gmt` itself (backed by the store): only its tokens, never a snapshot's own name.
            guard let token = String(validatingCString: name) else { throw Errno.noSuchFileOrDirectory }
            let snapshot = try dir.withFD { (storeFD) throws(Errno) in
                try snapshotState.previousVersions.snapshot(forToken: token, storeFD: storeFD)
            }
            guard let snapshot else { throw Errno.noSuchFileOrDirectory }
            return try snapshot.withCName { (cName) throws(Errno) in
                try entry(backingName: cName, in: dir, previousVersions: true)
            }
        }
        // `.snapshots/.gmt`: the store once more, as the root of the view.
        guard PreviousVersions.isDirectory(name), snapshotState.isStore(dir.key) else { return nil }
        return try entry(backingName: ".", in: dir, previousVersions: true)
    }

    /// Opens the backing object `name` in `dir` as `SNAPFS_O_PATH` and references its inode,
    /// in the `.snapshots/.gmt` view when `previousVersions`.
    func entry(backingName name: UnsafePointer<CChar>, in dir: Inode,
                     previousVersions: Bool) throws(Errno) -> Entry {
        // Read before the object's link count: a snapshot that links the object after
        // this point also raises the generation after it (see SnapshotState).
        let generation = snapshotState.currentGeneration
        let fd = try dir.withFD { (dirFD) throws(Errno) in
            try syscall(snapfs_openat(dirFD, name, SNAPFS_O_PATH | O_NOFOLLOW | O_CLOEXEC, 0))
        }
        let st: stat
        do throws(Errno) {
            st = try FileStatus.of(fd)
        } catch {
            close(fd)
            throw error
        }
        let snapshotView = dir.inSnapshotView || (dir.id == InodeTable.rootID && ReservedName.isSnapshots(name))
        // One link: its name here, so no snapshot shares it. More: it may be shared. While a
        // build runs in the background (installed before it raised the generation read
        // above), one link proves nothing: the build may link the object later.
        let owned = st.st_nlink <= 1 && snapshotState.activeCapture == nil
        let inode = inodes.reference(fd: fd, status: st, snapshotView: snapshotView,
                                     previousVersions: previousVersions, privateGeneration: owned ? generation : 0)
        if !snapshotView && st.fileType == S_IFREG {
            if snapshotState.sharesBackingObjects { inode.remember(name: name, in: dir) }
            classifySQLiteCompanion(inode, name: name, in: dir)
        }
        var reported = st
        if snapshotView { snapshotState.presentStore(BackingKey(st), &reported) }
        inode.applyReportedInode(&reported)
        // Dirty data in the page cache: the size and times it gives, not to be kept.
        var dirty = false
        if inode.cache.used.load(ordering: .relaxed) { dirty = (try? applyCachedAttributes(of: inode, to: &reported)) ?? false }
        return Entry(inode: inode.id, attributes: reported, uncached: snapshotView || dirty)
    }

    /// Whether the kernel may remember that a name is missing from `parent`: not in
    /// `.snapshots/`, where snapfs itself adds names.
    public func cachesMissingNames(in parent: UInt64) -> Bool {
        guard let dir = try? inodes.inode(parent) else { return false }
        return !dir.inSnapshotView
    }

    /// Drops kernel references.
    public func forget(_ inode: UInt64, count: UInt64) {
        if cache != nil, inodes.lookups(inode) == count, let node = try? inodes.inode(inode) { forgetCachedData(of: node) }
        inodes.forget(inode, count: count)
    }

    public func readlink(_ inode: UInt64) throws(Errno) -> [CChar] {
        let node = try inodes.inode(inode)
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = try buffer.withUnsafeMutableBufferPointer { buf throws(Errno) in
            try node.withFD { (fd) throws(Errno) in try syscall(Glibc.readlinkat(fd, "", buf.baseAddress!, buf.count - 1)) }
        }
        buffer.removeSubrange(length...)
        return buffer
    }

    /// mknod: FIFOs, sockets, devices and (when the kernel has no create) regular files.
    public func mknod(parent: UInt64, name: UnsafePointer<CChar>, mode: mode_t, device: dev_t,
                      context: RequestContext) throws(Errno) -> Entry {
        let dir = try inodes.inode(parent)
        let mode = (mode & S_IFMT) | creationMode(mode & 0o7777, in: dir, context: context)
        return try mutate(.createEntry(parent: dir, name: name)) { () throws(Errno) -> Entry in
            try dir.withFD { (dirFD) throws(Errno) in _ = try syscall(mknodat(dirFD, name, mode, device)) }
            return try adopt(name, in: dir, mode: mode, context: context)
        }
    }

    public func mkdir(parent: UInt64, name: UnsafePointer<CChar>, mode: mode_t,
                      context: RequestContext) throws(Errno) -> Entry {
        let dir = try inodes.inode(parent)
        let mode = creationMode(mode & 0o7777, in: dir, context: context)
        return try mutate(.createEntry(parent: dir, name: name)) { () throws(Errno) -> Entry in
            try dir.withFD { (dirFD) throws(Errno) in _ = try syscall(mkdirat(dirFD, name, mode)) }
            return try adopt(name, in: dir, mode: mode | S_IFDIR, context: context)
        }
    }

    public func symlink(target: UnsafePointer<CChar>, parent: UInt64, name: UnsafePointer<CChar>,
                        context: RequestContext) throws(Errno) -> Entry {
        let dir = try inodes.inode(parent)
        return try mutate(.createEntry(parent: dir, name: name)) { () throws(Errno) -> Entry in
            try dir.withFD { (dirFD) throws(Errno) in _ = try syscall(symlinkat(target, dirFD, name)) }
            return try adopt(name, in: dir, mode: S_IFLNK | 0o777, context: context)
        }
    }

    /// A new name for an existing inode.
    public func link(_ inode: UInt64, parent: UInt64, name: UnsafePointer<CChar>) throws(Errno) -> Entry {
        let node = try inodes.inode(inode)
        let dir = try inodes.inode(parent)
        if node.isDirectory { throw Errno.notPermitted }
        // `.snapshots/` is another filesystem, as a ZFS snapshot is: a link across fails
        // as link(2) across mounts does, before anything else is checked.
        if node.inSnapshotView != dir.inSnapshotView { throw Errno.improperLink }
        return try mutate(.createEntry(parent: dir, name: name)) { () throws(Errno) -> Entry in
            try node.withFD { (nodeFD) throws(Errno) in
                try dir.withFD { (dirFD) throws(Errno) in
                    try proc.link(nodeFD, into: dirFD, as: name)
                }
            }
            inodes.reference(node)
            let entry = Entry(inode: node.id, attributes: try attributes(of: node))
            // An O_TMPFILE file getting its first name: that name is its own, and a later
            // write may copy it up (with hard-link snapshots) into that place.
            if snapshotState.sharesBackingObjects && entry.attributes.st_nlink == 1 { node.remember(name: name, in: dir) }
            return entry
        }
    }

    public func unlink(parent: UInt64, name: UnsafePointer<CChar>) throws(Errno) {
        let dir = try inodes.inode(parent)
        try mutate(.removeEntry(parent: dir, name: name, directory: false)) { () throws(Errno) in
            try dir.withFD { (dirFD) throws(Errno) in _ = try syscall(unlinkat(dirFD, name, 0)) }
        }
    }

    public func rmdir(parent: UInt64, name: UnsafePointer<CChar>) throws(Errno) {
        let dir = try inodes.inode(parent)
        try mutate(.removeEntry(parent: dir, name: name, directory: true)) { () throws(Errno) in
            try dir.withFD { (dirFD) throws(Errno) in _ = try syscall(unlinkat(dirFD, name, AT_REMOVEDIR)) }
        }
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
    public func rename(parent: UInt64, name: UnsafePointer<CChar>, newParent: UInt64,
                       newName: UnsafePointer<CChar>, flags: UInt32) throws(Errno) {
        let supported = UInt32(SNAPFS_RENAME_NOREPLACE | SNAPFS_RENAME_EXCHANGE)
        if flags & ~supported != 0 { throw Errno.invalidArgument }
        let from = try inodes.inode(parent)
        let to = try inodes.inode(newParent)
        if from.inSnapshotView != to.inSnapshotView { throw Errno.improperLink }
        let exchange = flags & UInt32(SNAPFS_RENAME_EXCHANGE) != 0
        try mutate(.rename(from: from, name: name, to: to, newName: newName, exchange: exchange)) { () throws(Errno) in
            try from.withFD { (fromFD) throws(Errno) in
                try to.withFD { (toFD) throws(Errno) in
                    _ = try syscall(snapfs_renameat2(fromFD, name, toFD, newName, flags))
                }
            }
        }
    }

    /// The permission bits a new object gets: the caller's umask applies, unless `dir` has
    /// a default ACL; then the backing filesystem combines the mode with that ACL, as ext4
    /// does (the daemon's own umask is 0).
    func creationMode(_ mode: mode_t, in dir: Inode, context: RequestContext) -> mode_t {
        let hasDefaultACL = (try? dir.withFD { fd in CLinux.getxattr(proc.path(of: fd), "system.posix_acl_default", nil, 0) > 0 }) ?? false
        if hasDefaultACL { return mode }
        return mode & ~(context.umask & 0o777)
    }

    /// The owner a new object in `dir` must get when the daemon creates it for the caller,
    /// or nil when the daemon's own credentials already give the right one.
    func ownerOfNewObject(in dir: Inode, context: RequestContext) throws(Errno) -> (uid_t, gid_t)? {
        guard canChown, options.ownFilesAsCaller else { return nil }
        var gid = context.gid
        if context.uid == geteuid() && gid == getegid() { return nil }
        // In a set-group-ID directory a new object takes the directory's group.
        let parentStatus = try dir.withFD { (fd) throws(Errno) in try FileStatus.of(fd) }
        if parentStatus.st_mode & S_ISGID != 0 { gid = parentStatus.st_gid }
        return (context.uid, gid)
    }

    /// After creating `name` in `dir` on the caller's behalf: give it the caller's owner
    /// (the daemon runs as root; a local filesystem would have made it the caller's), and
    /// return its entry.
    func adopt(_ name: UnsafePointer<CChar>, in dir: Inode, mode: mode_t,
               context: RequestContext) throws(Errno) -> Entry {
        do throws(Errno) {
            try giveToCaller(name, in: dir, mode: mode, context: context)
            return try entry(named: name, in: dir)
        } catch {
            // Do not leave behind an object the caller was told was not created.
            _ = try? dir.withFD { fd in unlinkat(fd, name, (mode & S_IFMT) == S_IFDIR ? AT_REMOVEDIR : 0) }
            throw error
        }
    }

    func giveToCaller(_ name: UnsafePointer<CChar>, in dir: Inode, mode: mode_t,
                      context: RequestContext) throws(Errno) {
        guard let (uid, gid) = try ownerOfNewObject(in: dir, context: context) else { return }
        try dir.withFD { (fd) throws(Errno) in _ = try syscall(fchownat(fd, name, uid, gid, AT_SYMLINK_NOFOLLOW)) }
        // chown clears set-user/group-ID bits even for root; put back what was asked for.
        if (mode & S_IFMT) == S_IFREG, mode & (S_ISUID | S_ISGID) != 0 {
            try dir.withFD { (fd) throws(Errno) in _ = try syscall(fchmodat(fd, name, mode & 0o7777, 0)) }
        }
    }
}
