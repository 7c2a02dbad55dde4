import CFUSE
import Glibc
import SnapFSBacking
import SnapFSCore
import SnapFSSnapshots
import SystemPackage

extension FUSEOperations {
    /// The control file, `.snapfs-control` at the root (see ``ControlFile``), is a node of the
    /// FUSE edge, not of the backing tree: the kernel knows it by ``ControlFile/nodeID``,
    /// which the inode table never hands out, and each callback that can be sent that id
    /// asks ``owns(_:)`` first and hands the request here. Its handle is a
    /// ``ControlSession``, not an ``OpenFile``. Direct I/O: every write reaches the daemon
    /// as it is made, and every read sees the current outcome and status.
    ///
    /// Requests the kernel sends only for directories and symbolic links, `statfs` and
    /// `forget` go to the core, for which the id names no inode (ESTALE; `forget` does nothing).
    enum ControlNode {
        @inline(__always)
        static func owns(_ ino: fuse_ino_t) -> Bool { ino == ControlFile.nodeID }

        /// Whether `name` in `parent` is the control file: only at the root, and only while a
        /// snapshot engine is attached (a read-only mount has none).
        @inline(__always)
        static func isNamed(_ name: UnsafePointer<CChar>, in parent: fuse_ino_t, _ fs: FUSEBridge) -> Bool {
            parent == InodeTable.rootID && ReservedName.isControl(name) && fs.core.engine != nil
        }

        /// A regular file owned by the backing root's owner, with its times.
        private static func attributes(_ fs: FUSEBridge) throws(Errno) -> stat {
            ControlFile.attributes(root: try fs.core.getattr(InodeTable.rootID))
        }

        /// The entry, never cached by the kernel: each lookup sees whether the engine is there.
        static func lookup(_ req: fuse_req_t?, _ fs: FUSEBridge) throws(Errno) {
            fs.replyEntry(req, Entry(inode: ControlFile.nodeID, attributes: try attributes(fs), uncached: true))
        }

        static func getattr(_ req: fuse_req_t?, _ fs: FUSEBridge) {
            fs.handle(req, "getattr", ControlFile.nodeID) { () throws(Errno) in
                var st = try attributes(fs)
                fuse_reply_attr(req, &st, fs.attributeTimeout)
            }
        }

        /// `echo cmd > .snapfs-control` truncates first; there is nothing to truncate, and
        /// the times stay the root's. Owner and mode cannot change.
        static func setattr(_ req: fuse_req_t?, _ fs: FUSEBridge, _ changes: AttributeChanges) {
            fs.handle(req, "setattr", ControlFile.nodeID) { () throws(Errno) in
                guard changes.mode == nil, changes.uid == nil, changes.gid == nil else { throw Errno.notPermitted }
                var st = try attributes(fs)
                fuse_reply_attr(req, &st, fs.attributeTimeout)
            }
        }

        /// No extended attributes, and none can be set.
        static func getxattr(_ req: fuse_req_t?, _ fs: FUSEBridge, _ name: UnsafePointer<CChar>?) {
            fs.handle(req, "getxattr", ControlFile.nodeID, name) { () throws(Errno) in throw Errno.noData }
        }

        static func listxattr(_ req: fuse_req_t?, _ fs: FUSEBridge, size: Int) {
            fs.handle(req, "listxattr", ControlFile.nodeID) { () throws(Errno) in
                try FUSEOperations.replySized(req, size) { _ throws(Errno) in 0 }
            }
        }

        static func changeXattr(_ req: fuse_req_t?, _ fs: FUSEBridge, _ operation: StaticString,
                                _ name: UnsafePointer<CChar>?) {
            fs.handle(req, operation, ControlFile.nodeID, name) { () throws(Errno) in throw Errno.notPermitted }
        }

        /// It has one name.
        static func link(_ req: fuse_req_t?, _ fs: FUSEBridge, _ name: UnsafePointer<CChar>?) {
            fs.handle(req, "link", ControlFile.nodeID, name) { () throws(Errno) in throw Errno.notPermitted }
        }

        static func open(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>) {
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
            if fuse_reply_open(req, fi) != 0 { Unmanaged<ControlSession>.fromOpaque(pointer(fi)).release() }
        }

        static func read(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?, offset: Int64, size: Int) {
            let fs = FUSEBridge.of(req)
            guard let engine = fs.core.engine else { fuse_reply_err(req, EIO); return }
            let bytes = engine.controlRead(session(fi), offset: offset, size: size)
            bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress, $0.count) }
        }

        static func write(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?, _ data: UnsafeRawBufferPointer) {
            let fs = FUSEBridge.of(req)
            fs.handle(req, "control write", ControlFile.nodeID) { () throws(Errno) in
                guard let engine = fs.core.engine else { throw Errno.ioError }
                fuse_reply_write(req, try engine.controlWrite(session(fi), data))
            }
        }

        static func release(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
            Unmanaged<ControlSession>.fromOpaque(pointer(fi!)).release()
            fuse_reply_err(req, 0)
        }

        /// flush and fsync: a command is carried out before its write returns.
        static func sync(_ req: fuse_req_t?) {
            fuse_reply_err(req, 0)
        }

        static func fallocate(_ req: fuse_req_t?) {
            fuse_reply_err(req, EOPNOTSUPP)
        }

        /// The kernel falls back to read and write, which the control file understands.
        static func copyFileRange(_ req: fuse_req_t?) {
            fuse_reply_err(req, EXDEV)
        }

        static func lseek(_ req: fuse_req_t?) {
            fuse_reply_err(req, EINVAL)
        }

        private static func pointer(_ fi: UnsafeMutablePointer<fuse_file_info>) -> UnsafeMutableRawPointer {
            UnsafeMutableRawPointer(bitPattern: UInt(fi.pointee.fh))!
        }

        private static func session(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> ControlSession {
            Unmanaged<ControlSession>.fromOpaque(pointer(fi!)).takeUnretainedValue()
        }
    }
}
