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
        return DirectoryHandle(inode: node, dir: dir, charge: charge)
    }

    /// Lists entries from `offset`, handing each to `emit` until it returns false (buffer full).
    /// With `plus`, each entry but "." and ".." is looked up (one kernel reference each, taken
    /// back if `emit` refuses the entry).
    public func readdir(_ handle: DirectoryHandle, offset: Int64, plus: Bool,
                        emit: (DirectoryEntry) -> Bool) throws(Errno) {
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

    public func releasedir(_ handle: DirectoryHandle) {}

    public func fsyncdir(_ handle: DirectoryHandle, dataOnly: Bool) throws(Errno) {
        let fd = handle.fd
        try syscallRetrying { dataOnly ? fdatasync(fd) : Glibc.fsync(fd) }
    }
}
