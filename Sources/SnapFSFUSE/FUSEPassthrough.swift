import CFUSE
import CFUSEKernel
import Glibc
import Logging
import SnapFSCore
import Synchronization

/// FUSE passthrough through the session's `/dev/fuse` descriptor: backing files are
/// registered with `FUSE_DEV_IOC_BACKING_OPEN`, and an open reply naming one lets the kernel
/// read that file itself (see ``FUSEChannel``). Only once the INIT exchange agreed on it; if
/// the kernel then refuses registrations as such (no CAP_SYS_ADMIN, an older kernel), it is
/// given up for the mount, with one warning.
final class FUSEPassthrough: KernelPassthrough, @unchecked Sendable {
    private let session: OpaquePointer
    private let channel: FUSEChannel
    private let logger: Logger
    private let refused = Atomic<Bool>(false)

    init(session: OpaquePointer, channel: FUSEChannel, logger: Logger) {
        self.session = session
        self.channel = channel
        self.logger = logger
    }

    func register(_ fd: Int32) -> Int32? {
        guard channel.passthroughNegotiated.load(ordering: .relaxed), !refused.load(ordering: .relaxed) else { return nil }
        let id = snapfs_fuse_backing_open(fuse_session_fd(session), fd)
        if id > 0 { return id }
        let error = errno
        if [EPERM, ENOTTY, EINVAL, EOPNOTSUPP].contains(error),
           refused.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            logger.warning("the kernel refuses FUSE passthrough (\(String(cString: strerror(error)))); reads go through snapfs")
        }
        return nil
    }

    func unregister(_ id: Int32) {
        _ = snapfs_fuse_backing_close(fuse_session_fd(session), id)
    }
}
