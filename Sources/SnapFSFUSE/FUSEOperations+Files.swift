import CFUSE
import Glibc
import SnapFSBacking
import SnapFSCore
import SystemPackage

extension FUSEOperations {
    static func addFileOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.open = { req, ino, fi in
            if ControlNode.owns(ino) { return ControlNode.open(req, fi!) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "open", ino) { () throws(Errno) in
                let file = try fs.core.open(ino, flags: fi!.pointee.flags, context: FUSEBridge.context(req))
                FUSEOperations.prepare(fi!, for: file, bridge: fs)
                fs.channel.expectOpenReply(file.passthrough.backingID)
                defer { fs.channel.expectOpenReply(nil) }
                if fuse_reply_open(req, fi) != 0 { _ = FUSEBridge.takeFile(fi) }
            }
        }
        ops.create = { req, parent, name, mode, fi in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "create", parent, name) { () throws(Errno) in
                let (entry, file) = try fs.core.create(parent: parent, name: name!, mode: mode, flags: fi!.pointee.flags,
                                                       context: FUSEBridge.context(req))
                FUSEOperations.prepare(fi!, for: file, bridge: fs)
                var param = fs.entryParam(entry)
                fs.channel.expectOpenReply(file.passthrough.backingID)
                defer { fs.channel.expectOpenReply(nil) }
                if fuse_reply_create(req, &param, fi) != 0 {
                    _ = FUSEBridge.takeFile(fi)
                    fs.core.forget(entry.inode, count: 1)
                }
            }
        }
        ops.read = { req, ino, size, offset, fi in
            if ControlNode.owns(ino) { return ControlNode.read(req, fi, offset: Int64(offset), size: size) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "read", ino, detail: " offset=\(offset) size=\(size)") { () throws(Errno) in
                switch try fs.core.read(FUSEBridge.file(fi), offset: Int64(offset), size: size) {
                case let .file(fd, offset, length):
                    var vec = snapfs_bufvec_fd(fd, length, off_t(offset))
                    fuse_reply_data(req, &vec, FUSE_BUF_SPLICE_MOVE)
                case let .bytes(bytes):
                    bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress, $0.count) }
                }
            }
        }
        ops.write = { req, ino, buf, size, offset, fi in
            if ControlNode.owns(ino) { return ControlNode.write(req, fi, UnsafeRawBufferPointer(start: buf, count: size)) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "write", ino, detail: " offset=\(offset) size=\(size)") { () throws(Errno) in
                let written = try fs.core.write(FUSEBridge.file(fi), UnsafeRawBufferPointer(start: buf, count: size),
                                                offset: Int64(offset), context: FUSEBridge.context(req))
                fuse_reply_write(req, written)
            }
        }
        ops.flush = { req, ino, fi in
            if ControlNode.owns(ino) { return ControlNode.sync(req) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "flush", ino) { () throws(Errno) in
                try fs.core.flush(FUSEBridge.file(fi))
                fuse_reply_err(req, 0)
            }
        }
        ops.release = { req, ino, fi in
            if ControlNode.owns(ino) { return ControlNode.release(req, fi) }
            let fs = FUSEBridge.of(req)
            if fs.debug { fs.logger.debug("release ino=\(ino)") }
            CallerIdentity.serve(uid: fuse_req_ctx(req)!.pointee.uid)
            fs.core.release(FUSEBridge.takeFile(fi))
            fuse_reply_err(req, 0)
        }
        ops.fsync = { req, ino, datasync, fi in
            if ControlNode.owns(ino) { return ControlNode.sync(req) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "fsync", ino) { () throws(Errno) in
                try fs.core.fsync(FUSEBridge.file(fi), dataOnly: datasync != 0)
                fuse_reply_err(req, 0)
            }
        }
        ops.fallocate = { req, ino, mode, offset, length, fi in
            if ControlNode.owns(ino) { return ControlNode.fallocate(req) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "fallocate", ino) { () throws(Errno) in
                try fs.core.fallocate(FUSEBridge.file(fi), mode: mode, offset: Int64(offset), length: Int64(length),
                                     context: FUSEBridge.context(req))
                fuse_reply_err(req, 0)
            }
        }
        ops.copy_file_range = { req, inoIn, offIn, fiIn, inoOut, offOut, fiOut, length, flags in
            if ControlNode.owns(inoIn) || ControlNode.owns(inoOut) { return ControlNode.copyFileRange(req) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "copy_file_range", inoOut) { () throws(Errno) in
                let copied = try fs.core.copyFileRange(from: FUSEBridge.file(fiIn), at: Int64(offIn),
                                                       to: FUSEBridge.file(fiOut), at: Int64(offOut),
                                                       length: length, flags: UInt32(flags),
                                                       context: FUSEBridge.context(req))
                fuse_reply_write(req, copied)
            }
        }
        ops.lseek = { req, ino, offset, whence, fi in
            if ControlNode.owns(ino) { return ControlNode.lseek(req) }
            let fs = FUSEBridge.of(req)
            fs.handle(req, "lseek", ino) { () throws(Errno) in
                fuse_reply_lseek(req, off_t(try fs.core.lseek(FUSEBridge.file(fi), offset: Int64(offset), whence: whence)))
            }
        }
    }

    /// Open-reply flags: the kernel may keep cached pages across opens (all changes come
    /// through snapfs); close calls the daemon only when the page cache may hold the
    /// file's data (close writes it back and reports a failed write-back). A passthrough
    /// open (the kernel refuses any flag but direct I/O beside it) reads the backing file
    /// itself, or comes to the daemon with direct I/O while it shares the inode with one.
    static func prepare(_ fi: UnsafeMutablePointer<fuse_file_info>, for file: OpenFile, bridge: FUSEBridge) {
        let core = bridge.core
        FUSEBridge.store(file, in: fi)
        fi.pointee.noflush = core.closeNeedsDaemon(file) ? 0 : 1
        switch file.passthrough {
        case .none:
            fi.pointee.keep_cache = file.dropsKernelPages ? 0 : 1
            if core.writesBypassKernelCache(file) { fi.pointee.direct_io = 1 }
        case let .reads(id):
            fi.pointee.keep_cache = 0
            if bridge.debug { bridge.logger.debug("open ino=\(file.inode.id): passthrough, backing id \(id)") }
        case let .directIO(id):
            fi.pointee.keep_cache = 0
            fi.pointee.direct_io = 1
            if bridge.debug { bridge.logger.debug("open ino=\(file.inode.id): direct I/O beside passthrough, backing id \(id)") }
        }
    }
}
