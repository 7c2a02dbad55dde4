import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

extension FUSEOperations {
    static func addDirectoryOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.opendir = { req, ino, fi in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "opendir", ino) { () throws(Errno) in
                let dir = try fs.core.opendir(ino, context: FUSEBridge.context(req))
                FUSEBridge.store(dir, in: fi!)
                if fuse_reply_open(req, fi) != 0 { _ = FUSEBridge.takeDirectory(fi) }
            }
        }
        ops.readdir = { req, ino, size, offset, fi in
            FUSEOperations.list(req, ino, size, offset, fi, plus: false)
        }
        ops.readdirplus = { req, ino, size, offset, fi in
            FUSEOperations.list(req, ino, size, offset, fi, plus: true)
        }
        ops.releasedir = { req, ino, fi in
            let fs = FUSEBridge.of(req)
            fs.core.releasedir(FUSEBridge.takeDirectory(fi))
            fuse_reply_err(req, 0)
        }
        ops.fsyncdir = { req, ino, datasync, fi in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "fsyncdir", ino) { () throws(Errno) in
                try fs.core.fsyncdir(FUSEBridge.directory(fi), dataOnly: datasync != 0)
                fuse_reply_err(req, 0)
            }
        }
    }

    /// readdir / readdirplus: fills one reply buffer of at most `size` bytes.
    static func list(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t,
                     _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        let fs = FUSEBridge.of(req)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buffer.deallocate() }
        var used = 0
        fs.handle(req, plus ? "readdirplus" : "readdir", ino) { () throws(Errno) in
            do throws(Errno) {
                try fs.core.readdir(FUSEBridge.directory(fi), offset: Int64(offset), plus: plus) { item in
                    let remaining = size - used
                    let needed: Int
                    if plus {
                        var param = item.entry.map { fs.entryParam($0) } ?? fuse_entry_param()
                        if item.entry == nil { param.attr = item.attributes }
                        needed = fuse_add_direntry_plus(req, buffer + used, remaining, item.name, &param, off_t(item.nextOffset))
                    } else {
                        var st = item.attributes
                        needed = fuse_add_direntry(req, buffer + used, remaining, item.name, &st, off_t(item.nextOffset))
                    }
                    if needed > remaining { return false }
                    used += needed
                    return true
                }
            } catch {
                // Entries already listed are answered; the error comes with the next call.
                if used == 0 { throw error }
            }
            fuse_reply_buf(req, buffer, used)
        }
    }
}
