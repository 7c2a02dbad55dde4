import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

extension FUSEOperations {
    static func addNameOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.lookup = { req, parent, name in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "lookup", parent, name) { () throws(Errno) in
                do throws(Errno) {
                    if ControlNode.isNamed(name!, in: parent, fs) { return try ControlNode.lookup(req, fs) }
                    fs.replyEntry(req, try fs.core.lookup(parent: parent, name: name!))
                } catch .noSuchFileOrDirectory {
                    if fs.core.cachesMissingNames(in: parent) {
                        fs.replyNoEntry(req)
                    } else {
                        fuse_reply_err(req, ENOENT)
                    }
                }
            }
        }
        ops.forget = { req, ino, count in
            FUSEBridge.of(req).core.forget(ino, count: count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let fs = FUSEBridge.of(req)
            for index in 0..<count {
                let item = forgets![index]
                fs.core.forget(item.ino, count: item.nlookup)
            }
            fuse_reply_none(req)
        }
        ops.readlink = { req, ino in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "readlink", ino) { () throws(Errno) in
                var target = try fs.core.readlink(ino)
                target.append(0)
                fuse_reply_readlink(req, target)
            }
        }
        ops.mknod = { req, parent, name, mode, rdev in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "mknod", parent, name) { () throws(Errno) in
                fs.replyEntry(req, try fs.core.mknod(parent: parent, name: name!, mode: mode, device: rdev,
                                                      context: FUSEBridge.context(req)))
            }
        }
        ops.mkdir = { req, parent, name, mode in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "mkdir", parent, name) { () throws(Errno) in
                fs.replyEntry(req, try fs.core.mkdir(parent: parent, name: name!, mode: mode,
                                                      context: FUSEBridge.context(req)))
            }
        }
        ops.symlink = { req, target, parent, name in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "symlink", parent, name) { () throws(Errno) in
                fs.replyEntry(req, try fs.core.symlink(target: target!, parent: parent, name: name!,
                                                        context: FUSEBridge.context(req)))
            }
        }
        ops.link = { req, ino, parent, name in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.link(req, fs, name) }
            fs.handle(req, "link", ino, name) { () throws(Errno) in
                fs.replyEntry(req, try fs.core.link(ino, parent: parent, name: name!))
            }
        }
        ops.unlink = { req, parent, name in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "unlink", parent, name) { () throws(Errno) in
                try fs.core.unlink(parent: parent, name: name!)
                fuse_reply_err(req, 0)
            }
        }
        ops.rmdir = { req, parent, name in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "rmdir", parent, name) { () throws(Errno) in
                try fs.core.rmdir(parent: parent, name: name!)
                fuse_reply_err(req, 0)
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "rename", parent, name) { () throws(Errno) in
                try fs.core.rename(parent: parent, name: name!, newParent: newParent, newName: newName!, flags: flags)
                fuse_reply_err(req, 0)
            }
        }
    }
}
