import CFUSEKernel
import Glibc
import SnapFSCore
import SystemPackage

/// open(2) with O_TMPFILE. The kernel sends FUSE_TMPFILE (opcode 51), which libfuse 3.14
/// does not know (it would answer ENOSYS, and the kernel would refuse O_TMPFILE from
/// then on). ``FUSEChannel`` hands such requests here; this answers them the way libfuse
/// answers CREATE: an entry and an open file.
enum FUSETmpfile {
    /// Answers one FUSE_TMPFILE request read from `fd`.
    static func serve(_ request: UnsafeRawBufferPointer, fd: Int32, bridge: FUSEBridge) {
        let header = FUSEKernelABI.header(of: request.baseAddress!)
        guard request.count >= FUSEKernelABI.inHeaderSize + MemoryLayout<fuse_create_in>.size else {
            return replyError(fd, header.unique, EINVAL)
        }
        let create = request.loadUnaligned(fromByteOffset: FUSEKernelABI.inHeaderSize, as: fuse_create_in.self)
        let parent = header.nodeid
        let context = RequestContext(uid: header.uid, gid: header.gid, pid: Int32(bitPattern: header.pid),
                                     umask: create.umask)
        if bridge.debug { bridge.logger.debug("tmpfile ino=\(parent)") }
        let entry: Entry
        let file: OpenFile
        do {
            (entry, file) = try bridge.core.tmpfile(parent: parent, mode: create.mode, flags: Int32(bitPattern: create.flags),
                                                    context: context)
        } catch {
            if bridge.debug { bridge.logger.debug("tmpfile ino=\(parent) -> \(error)") }
            return replyError(fd, header.unique, error.rawValue)
        }
        let handle = UInt64(UInt(bitPattern: Unmanaged.passRetained(file).toOpaque()))
        var reply = snapfs_fuse_create_reply()
        reply.header.len = UInt32(MemoryLayout<snapfs_fuse_create_reply>.size)
        reply.header.unique = header.unique
        reply.entry = entryOut(entry, bridge: bridge)
        reply.open.fh = handle
        // As ``FUSEOperations.prepare`` sets for an open.
        reply.open.open_flags = UInt32(FOPEN_KEEP_CACHE | FOPEN_NOFLUSH)
        let sent = withUnsafeBytes(of: &reply) { FUSEChannel.send($0, fd: fd) }
        if !sent {
            // The request was interrupted: the kernel holds neither the inode nor the file.
            Unmanaged<OpenFile>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(handle))!).release()
            bridge.core.forget(entry.inode, count: 1)
        }
    }

    private static func entryOut(_ entry: Entry, bridge: FUSEBridge) -> fuse_entry_out {
        func seconds(_ t: Double) -> (UInt64, UInt32) { (UInt64(t), UInt32((t - t.rounded(.down)) * 1e9)) }
        var out = fuse_entry_out()
        out.nodeid = entry.inode
        out.generation = 0
        (out.entry_valid, out.entry_valid_nsec) = seconds(bridge.entryTimeout)
        (out.attr_valid, out.attr_valid_nsec) = seconds(bridge.attributeTimeout)
        let st = entry.attributes
        out.attr.ino = UInt64(st.st_ino)
        out.attr.size = UInt64(st.st_size)
        out.attr.blocks = UInt64(st.st_blocks)
        out.attr.atime = UInt64(bitPattern: Int64(st.st_atim.tv_sec))
        out.attr.mtime = UInt64(bitPattern: Int64(st.st_mtim.tv_sec))
        out.attr.ctime = UInt64(bitPattern: Int64(st.st_ctim.tv_sec))
        out.attr.atimensec = UInt32(st.st_atim.tv_nsec)
        out.attr.mtimensec = UInt32(st.st_mtim.tv_nsec)
        out.attr.ctimensec = UInt32(st.st_ctim.tv_nsec)
        out.attr.mode = st.st_mode
        out.attr.nlink = UInt32(st.st_nlink)
        out.attr.uid = st.st_uid
        out.attr.gid = st.st_gid
        out.attr.rdev = UInt32(truncatingIfNeeded: st.st_rdev)
        out.attr.blksize = UInt32(st.st_blksize)
        out.attr.flags = 0
        return out
    }

    private static func replyError(_ fd: Int32, _ unique: UInt64, _ error: Int32) {
        var header = fuse_out_header()
        header.len = UInt32(MemoryLayout<fuse_out_header>.size)
        header.error = -error
        header.unique = unique
        _ = withUnsafeBytes(of: &header) { FUSEChannel.send($0, fd: fd) }
    }
}
