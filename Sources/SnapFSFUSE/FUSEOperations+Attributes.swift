import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

extension FUSEOperations {
    static func addAttributeOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.getattr = { req, ino, _ in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.getattr(req, fs) }
            fs.handle(req, "getattr", ino) { () throws(Errno) in
                fs.replyAttributes(req, try fs.core.getattr(ino), of: ino)
            }
        }
        ops.setattr = { req, ino, attr, toSet, fi in
            let fs = FUSEBridge.of(req)
            let changes = FUSEOperations.decodeChanges(attr!.pointee, toSet)
            if ControlNode.owns(ino) { return ControlNode.setattr(req, fs, changes) }
            fs.handle(req, "setattr", ino) { () throws(Errno) in
                let file = fi.map { FUSEBridge.file($0) }
                fs.replyAttributes(req, try fs.core.setattr(ino, changes, file: file, context: FUSEBridge.context(req)), of: ino)
            }
        }
        ops.statfs = { req, ino in
            let fs = FUSEBridge.of(req)
            fs.handle(req, "statfs", ino) { () throws(Errno) in
                var st = try fs.core.statfs(ino)
                fuse_reply_statfs(req, &st)
            }
        }
    }

    static func decodeChanges(_ attr: stat, _ toSet: Int32) -> AttributeChanges {
        var changes = AttributeChanges()
        if toSet & FUSE_SET_ATTR_MODE != 0 { changes.mode = attr.st_mode }
        if toSet & FUSE_SET_ATTR_UID != 0 { changes.uid = attr.st_uid }
        if toSet & FUSE_SET_ATTR_GID != 0 { changes.gid = attr.st_gid }
        if toSet & FUSE_SET_ATTR_SIZE != 0 { changes.size = Int64(attr.st_size) }
        if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 {
            changes.accessTime = .now
        } else if toSet & FUSE_SET_ATTR_ATIME != 0 {
            changes.accessTime = .set(attr.st_atim)
        }
        if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
            changes.modificationTime = .now
        } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
            changes.modificationTime = .set(attr.st_mtim)
        }
        return changes
    }
}
