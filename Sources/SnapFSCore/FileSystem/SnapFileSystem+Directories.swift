import CLinux
import Glibc
import SnapFSBacking
import SnapFSSnapshots
import SystemPackage

/// Directory listing and directory sync.
extension SnapFileSystem {
    public func opendir(_ inode: UInt64, context: RequestContext = .daemon) throws(Errno) -> DirectoryHandle {
        let node = try inodes.inode(inode)
        let charge = try handles.charge(context.uid, .directory)
        let fd = try node.withFD { (pathFD) throws(Errno) in try proc.reopen(pathFD, flags: O_RDONLY | O_DIRECTORY) }
        guard let dir = fdopendir(fd) else {
            let error = Errno.current
            close(fd)
            throw error
        }
        var versions: [PreviousVersions.Version]?
        if node.inPreviousVersions && snapshotState.isStore(node.key) {
            do throws(Errno) {
                versions = try snapshotState.previousVersions.versions(storeFD: fd)
            } catch {
                closedir(dir)
                throw error
            }
        }
        return DirectoryHandle(inode: node, dir: dir, charge: charge, versions: versions)
    }

    /// Lists entries from `offset`, handing each to `emit` until it returns false (buffer full).
    /// With `plus`, each entry but "." and ".." is looked up (one kernel reference each, taken
    /// back if `emit` refuses the entry).
    public func readdir(_ handle: DirectoryHandle, offset: Int64, plus: Bool,
                        emit: (DirectoryEntry) -> Bool) throws(Errno) {
        if let versions = handle.versions {
            return try listVersions(versions, of: handle.inode, offset: offset, plus: plus, emit: emit)
        }
        try handle.stream.withLock { stream throws(Errno) in
            if offset != stream.position {
                seekdir(stream.dir, Int(offset))
                stream.position = offset
            }
            while true {
                errno = 0
                guard let dirent = Glibc.readdir(stream.dir) else {
                    if errno != 0 { throw Errno.current }
                    return
                }
                let nextOffset = Int64(dirent.pointee.d_off)
                let accepted = try withUnsafePointer(to: &dirent.pointee.d_name) { tuple throws(Errno) -> Bool in
                    try tuple.withMemoryRebound(to: CChar.self, capacity: 256) { name throws(Errno) -> Bool in
                        try emitEntry(name: name, type: dirent.pointee.d_type, backingInode: dirent.pointee.d_ino,
                                      nextOffset: nextOffset, in: handle.inode, plus: plus, emit: emit)
                    }
                }
                if !accepted {
                    seekdir(stream.dir, Int(stream.position))
                    return
                }
                stream.position = nextOffset
            }
        }
    }

    private func emitEntry(name: UnsafePointer<CChar>, type: UInt8, backingInode: UInt, nextOffset: Int64,
                           in dir: Inode, plus: Bool, emit: (DirectoryEntry) -> Bool) throws(Errno) -> Bool {
        // `.snapshots` is hidden from the root's listing, as ZFS hides `.zfs`: `cd`, `ls
        // .snapshots` and lookups work, but find, du, tar and rsync of the mount do not
        // walk into every snapshot.
        if dir.id == InodeTable.rootID && ReservedName.isSnapshots(name) { return true }
        let isDot = name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0))
        var st = stat()
        st.st_mode = mode_t(type) << 12
        st.st_ino = backingInode
        // The numbers stat gives under `.snapshots` (see Inode.applyReportedInode); `..` is
        // left as it is, since the `..` of `.snapshots` itself is the live root.
        let isDotDot = isDot && name[1] == 0x2E
        if dir.inSnapshotView && !isDotDot { st.st_ino |= UInt(1) << 63 }
        var entry: Entry?
        if plus && !isDot {
            do throws(Errno) {
                entry = try self.entry(named: name, in: dir)
            } catch .noSuchFileOrDirectory {
                return true   // removed since the listing was read
            }
            st = entry!.attributes
        }
        let accepted = emit(DirectoryEntry(name: name, attributes: st, nextOffset: nextOffset, entry: entry))
        if !accepted, let entry { inodes.forget(entry.inode, count: 1) }
        return accepted
    }

    /// Lists `.snapshots/.gmt` from `offset`: `.`, `..`, then one directory per token
    /// (offsets 1, 2, 3…: the position of the next entry). With `plus`, each token is looked
    /// up; one whose snapshot was deleted since the open is left out.
    private func listVersions(_ versions: [PreviousVersions.Version], of dir: Inode, offset: Int64, plus: Bool,
                              emit: (DirectoryEntry) -> Bool) throws(Errno) {
        guard offset >= 0 else { throw Errno.invalidArgument }
        var position = Int(clamping: offset)
        while position < versions.count + 2 {
            var st = stat()
            st.st_mode = S_IFDIR
            var entry: Entry?
            let name = position == 0 ? "." : position == 1 ? ".." : versions[position - 2].token
            if position < 2 {
                st = try attributes(of: dir)
                // `..` is `.snapshots`: the same store, as it shows there.
                if position == 1 { st.st_ino &= ~(UInt(1) << 62) }
            } else {
                let snapshot = versions[position - 2].snapshot.description
                do throws(Errno) {
                    if plus {
                        entry = try snapshot.withCName { (cName) throws(Errno) in
                            try self.entry(backingName: cName, in: dir, previousVersions: true)
                        }
                        st = entry!.attributes
                    } else {
                        st = try dir.withFD { (storeFD) throws(Errno) in
                            try snapshot.withCName { (cName) throws(Errno) in try FileStatus.of(cName, in: storeFD) }
                        }
                        st.st_ino |= UInt(1) << 63 | UInt(1) << 62
                    }
                } catch .noSuchFileOrDirectory {
                    position += 1
                    continue   // deleted since the open
                }
            }
            let accepted = try name.withCName { (cName) throws(Errno) -> Bool in
                emit(DirectoryEntry(name: cName, attributes: st, nextOffset: Int64(position + 1), entry: entry))
            }
            if !accepted {
                if let entry { inodes.forget(entry.inode, count: 1) }
                return
            }
            position += 1
        }
    }

    public func releasedir(_ handle: DirectoryHandle) {}

    public func fsyncdir(_ handle: DirectoryHandle, dataOnly: Bool) throws(Errno) {
        let fd = handle.fd
        try syscallRetrying { dataOnly ? fdatasync(fd) : Glibc.fsync(fd) }
    }
}
