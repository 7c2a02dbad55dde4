import CFUSE
import CLinux
import Glibc
import Synchronization

/// The session's I/O on `/dev/fuse`, installed through `fuse_session_custom_io` after the
/// mount. It behaves exactly like libfuse's own I/O except for two things: it adds
/// `FUSE_HANDLE_KILLPRIV_V2` to the INIT reply when the kernel offers it, and it answers
/// FUSE_TMPFILE itself (``FUSETmpfile``), which libfuse 3.14 does not know.
///
/// Why: without that flag the kernel asks the daemon for the `security.capability` xattr
/// before every `write()` (one extra round trip per write — 11 of ~38 per SQLite commit),
/// because only with it does FUSE set `SB_NOSEC`. libfuse 3.14 cannot negotiate the flag.
/// With it, clearing set-ID bits and capabilities on write/truncate is the daemon's job;
/// ``SnapFileSystem`` does that (see `dropPrivileges`).
enum FUSEChannel {
    private static let fuseInit: UInt32 = 26
    private static let handleKillprivV2: UInt32 = 1 << 28
    /// The `unique` of the INIT request once read and offered the flag; 0 otherwise.
    private static let pendingInit = Atomic<UInt64>(0)

    static func install(on session: OpaquePointer) -> Bool {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            var count = Glibc.read(fd, buffer, length)
            // Requests libfuse does not know are answered here; then read the next one.
            while count >= 40, let buffer, buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == FUSETmpfile.opcode {
                let bridge = userdata.map { Unmanaged<FUSEBridge>.fromOpaque($0).takeUnretainedValue() }
                FUSETmpfile.serve(UnsafeRawBufferPointer(start: buffer, count: count), fd: fd, bridge: bridge)
                count = Glibc.read(fd, buffer, length)
            }
            if count >= 56, let buffer {
                // fuse_in_header: len, opcode, unique …; fuse_init_in.flags at offset 40 + 12.
                let opcode = buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                if opcode == FUSEChannel.fuseInit {
                    let kernelFlags = buffer.loadUnaligned(fromByteOffset: 52, as: UInt32.self)
                    if kernelFlags & FUSEChannel.handleKillprivV2 != 0 {
                        FUSEChannel.pendingInit.store(buffer.loadUnaligned(fromByteOffset: 8, as: UInt64.self), ordering: .sequentiallyConsistent)
                    }
                }
            }
            return count
        }
        io.writev = { fd, iov, count, _ in
            if let iov, count >= 2, FUSEChannel.pendingInit.load(ordering: .relaxed) != 0 {
                FUSEChannel.patchInitReply(iov)
            }
            return Glibc.writev(fd, iov, count)
        }
        io.splice_send = { fdIn, offIn, fdOut, offOut, length, flags, _ in
            snapfs_splice(fdIn, offIn, fdOut, offOut, length, flags)
        }
        return fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0
    }

    private static func patchInitReply(_ iov: UnsafeMutablePointer<iovec>) {
        guard let header = iov[0].iov_base, iov[0].iov_len >= 16,
              let body = iov[1].iov_base, iov[1].iov_len >= 16 else { return }
        let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        let error = header.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        guard error == 0, pendingInit.compareExchange(expected: unique, desired: 0, ordering: .sequentiallyConsistent).exchanged else { return }
        let flags = body.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        body.storeBytes(of: flags | handleKillprivV2, toByteOffset: 12, as: UInt32.self)
    }
}
