import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

/// The `fuse_lowlevel_ops` table: each callback decodes its arguments, calls the core and
/// replies. Closures without captures convert to C function pointers; the core is reached
/// through the request's userdata.
///
/// POSIX and flock locks are left to the kernel (no getlk/setlk/flock), which then keeps
/// them locally for all processes using the mount, exactly as on a local filesystem.
enum FUSEOperations {
    static func make(writebackCache: Bool) -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let conn else { return }
            let bridge = Unmanaged<FUSEBridge>.fromOpaque(userdata!).takeUnretainedValue()
            FUSEOperations.negotiate(conn, writebackCache: bridge.core.options.kernelWritebackCache,
                                     posixACL: bridge.core.options.posixACL)
        }
        addNameOperations(&ops)
        addAttributeOperations(&ops)
        addFileOperations(&ops)
        addDirectoryOperations(&ops)
        addExtendedAttributeOperations(&ops)
        return ops
    }

    /// Chooses the kernel features snapfs uses.
    static func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>, writebackCache: Bool, posixACL: Bool) {
        var want = conn.pointee.want
        let capable = conn.pointee.capable
        let wanted: [UInt32] = [
            UInt32(FUSE_CAP_SPLICE_WRITE), UInt32(FUSE_CAP_SPLICE_MOVE),
            UInt32(FUSE_CAP_PARALLEL_DIROPS), UInt32(FUSE_CAP_ATOMIC_O_TRUNC),
            UInt32(FUSE_CAP_ASYNC_READ), UInt32(FUSE_CAP_ASYNC_DIO),
            UInt32(FUSE_CAP_READDIRPLUS), UInt32(FUSE_CAP_READDIRPLUS_AUTO),
            UInt32(FUSE_CAP_CACHE_SYMLINKS), UInt32(FUSE_CAP_EXPORT_SUPPORT), UInt32(FUSE_CAP_HANDLE_KILLPRIV),
        ]
        for flag in wanted where capable & flag != 0 { want |= flag }
        // snapfs sees every change, so the kernel need not re-check data on mtime changes.
        want &= ~UInt32(FUSE_CAP_AUTO_INVAL_DATA)
        if writebackCache && capable & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0 {
            want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
        } else {
            want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
        }
        // POSIX ACLs as on ext4: the kernel checks them and leaves the umask to snapfs,
        // which applies it unless the parent directory has a default ACL.
        if posixACL && capable & UInt32(FUSE_CAP_POSIX_ACL) != 0 {
            want |= UInt32(FUSE_CAP_POSIX_ACL)
            if capable & UInt32(FUSE_CAP_DONT_MASK) != 0 { want |= UInt32(FUSE_CAP_DONT_MASK) }
        }
        conn.pointee.want = want
        conn.pointee.time_gran = 1
        conn.pointee.max_readahead = 1 << 20
        conn.pointee.max_background = 64
        conn.pointee.congestion_threshold = 48
    }
}
