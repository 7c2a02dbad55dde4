import CFUSE
import Glibc
import SnapFSBacking
import SnapFSCore
import SystemPackage

/// The control file's requests. Its handle is a ``ControlSession``, not an ``OpenFile``, so
/// the file callbacks send its node id here first. Direct I/O: every write reaches the
/// daemon as it is made, and every read sees the current outcome and status.
extension FUSEOperations {
    static func controlOpen(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        let fs = FUSEBridge.of(req)
        guard fs.core.engine != nil else {
            fuse_reply_err(req, ENOENT)
            return
        }
        let session = ControlSession()
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(session).toOpaque()))
        fi.pointee.direct_io = 1
        fi.pointee.keep_cache = 0
        fi.pointee.noflush = 1
        if fuse_reply_open(req, fi) != 0 { Unmanaged<ControlSession>.fromOpaque(controlPointer(fi)).release() }
    }

    static func controlRead(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?, offset: Int64, size: Int) {
        let fs = FUSEBridge.of(req)
        guard let engine = fs.core.engine else { fuse_reply_err(req, EIO); return }
        let bytes = engine.controlRead(controlSession(fi), offset: offset, size: size)
        bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress, $0.count) }
    }

    static func controlWrite(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?, _ data: UnsafeRawBufferPointer) {
        let fs = FUSEBridge.of(req)
        fs.handle(req, "control write", ControlFile.nodeID) { () throws(Errno) in
            guard let engine = fs.core.engine else { throw Errno.ioError }
            fuse_reply_write(req, try engine.controlWrite(controlSession(fi), data))
        }
    }

    static func controlRelease(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        Unmanaged<ControlSession>.fromOpaque(controlPointer(fi!)).release()
        fuse_reply_err(req, 0)
    }

    private static func controlPointer(_ fi: UnsafeMutablePointer<fuse_file_info>) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(fi.pointee.fh))!
    }

    private static func controlSession(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> ControlSession {
        Unmanaged<ControlSession>.fromOpaque(controlPointer(fi!)).takeUnretainedValue()
    }
}
