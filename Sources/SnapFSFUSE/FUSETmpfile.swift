import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

/// open(2) with O_TMPFILE. The kernel sends FUSE_TMPFILE (opcode 51), which libfuse 3.14
/// does not know (it would answer ENOSYS, and the kernel would refuse O_TMPFILE from
/// then on). ``FUSEChannel`` hands such requests here; this answers them the way libfuse
/// answers CREATE: an entry and an open file.
enum FUSETmpfile {
    static let opcode: UInt32 = 51
    private static let inHeaderSize = 40
    private static let createInSize = 16

    /// Answers one FUSE_TMPFILE request read from `fd`.
    static func serve(_ request: UnsafeRawBufferPointer, fd: Int32, bridge: FUSEBridge?) {
        let unique = request.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        guard let bridge else { return replyError(fd, unique, ENOSYS) }
        guard request.count >= inHeaderSize + createInSize else { return replyError(fd, unique, EINVAL) }
        let parent = request.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        let context = RequestContext(uid: request.loadUnaligned(fromByteOffset: 24, as: UInt32.self),
                                     gid: request.loadUnaligned(fromByteOffset: 28, as: UInt32.self),
                                     pid: Int32(bitPattern: request.loadUnaligned(fromByteOffset: 32, as: UInt32.self)),
                                     umask: request.loadUnaligned(fromByteOffset: inHeaderSize + 8, as: UInt32.self))
        let flags = Int32(bitPattern: request.loadUnaligned(fromByteOffset: inHeaderSize, as: UInt32.self))
        let mode = request.loadUnaligned(fromByteOffset: inHeaderSize + 4, as: UInt32.self)
        if bridge.debug { bridge.logger.debug("tmpfile ino=\(parent)") }
        let entry: Entry
        let file: OpenFile
        do {
            (entry, file) = try bridge.core.tmpfile(parent: parent, mode: mode, flags: flags, context: context)
        } catch {
            if bridge.debug { bridge.logger.debug("tmpfile ino=\(parent) -> \(error)") }
            return replyError(fd, unique, error.rawValue)
        }
        // fuse_out_header (16) + fuse_entry_out (128) + fuse_open_out (16).
        var reply = [UInt8](repeating: 0, count: 160)
        let handle = UInt64(UInt(bitPattern: Unmanaged.passRetained(file).toOpaque()))
        reply.withUnsafeMutableBytes { out in
            out.storeBytes(of: UInt32(160), toByteOffset: 0, as: UInt32.self)
            out.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
            storeEntry(entry, bridge: bridge, into: UnsafeMutableRawBufferPointer(rebasing: out[16..<144]))
            out.storeBytes(of: handle, toByteOffset: 144, as: UInt64.self)
            // FOPEN_KEEP_CACHE (1 << 1) | FOPEN_NOFLUSH (1 << 5), as ``FUSEOperations.prepare`` sets for open.
            out.storeBytes(of: UInt32(1 << 1 | 1 << 5), toByteOffset: 152, as: UInt32.self)
        }
        let sent = reply.withUnsafeBytes { FUSEChannel.send($0, fd: fd) }
        if !sent {
            // The request was interrupted: the kernel holds neither the inode nor the file.
            Unmanaged<OpenFile>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(handle))!).release()
            bridge.core.forget(entry.inode, count: 1)
        }
    }

    private static func storeEntry(_ entry: Entry, bridge: FUSEBridge, into out: UnsafeMutableRawBufferPointer) {
        func seconds(_ t: Double) -> (UInt64, UInt32) { (UInt64(t), UInt32((t - t.rounded(.down)) * 1e9)) }
        let (entrySeconds, entryNanos) = seconds(bridge.entryTimeout)
        let (attrSeconds, attrNanos) = seconds(bridge.attributeTimeout)
        out.storeBytes(of: entry.inode, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: UInt64(0), toByteOffset: 8, as: UInt64.self)
        out.storeBytes(of: entrySeconds, toByteOffset: 16, as: UInt64.self)
        out.storeBytes(of: attrSeconds, toByteOffset: 24, as: UInt64.self)
        out.storeBytes(of: entryNanos, toByteOffset: 32, as: UInt32.self)
        out.storeBytes(of: attrNanos, toByteOffset: 36, as: UInt32.self)
        // fuse_attr
        let st = entry.attributes
        let fields64: [UInt64] = [UInt64(st.st_ino), UInt64(st.st_size), UInt64(st.st_blocks),
                                  UInt64(bitPattern: Int64(st.st_atim.tv_sec)), UInt64(bitPattern: Int64(st.st_mtim.tv_sec)),
                                  UInt64(bitPattern: Int64(st.st_ctim.tv_sec))]
        for (index, value) in fields64.enumerated() {
            out.storeBytes(of: value, toByteOffset: 40 + 8 * index, as: UInt64.self)
        }
        let fields32: [UInt32] = [UInt32(st.st_atim.tv_nsec), UInt32(st.st_mtim.tv_nsec), UInt32(st.st_ctim.tv_nsec),
                                  st.st_mode, UInt32(st.st_nlink), st.st_uid, st.st_gid, UInt32(truncatingIfNeeded: st.st_rdev),
                                  UInt32(st.st_blksize), 0]
        for (index, value) in fields32.enumerated() {
            out.storeBytes(of: value, toByteOffset: 88 + 4 * index, as: UInt32.self)
        }
    }

    private static func replyError(_ fd: Int32, _ unique: UInt64, _ error: Int32) {
        var header = [UInt8](repeating: 0, count: 16)
        header.withUnsafeMutableBytes { out in
            out.storeBytes(of: UInt32(16), toByteOffset: 0, as: UInt32.self)
            out.storeBytes(of: -error, toByteOffset: 4, as: Int32.self)
            out.storeBytes(of: unique, toByteOffset: 8, as: UInt64.self)
        }
        _ = header.withUnsafeBytes { FUSEChannel.send($0, fd: fd) }
    }
}
