import CFUSE
import Glibc
import SnapFSCore
import SystemPackage

extension FUSEOperations {
    static func addExtendedAttributeOperations(_ ops: inout fuse_lowlevel_ops) {
        ops.getxattr = { req, ino, name, size in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.getxattr(req, fs, name) }
            fs.handle(req, "getxattr", ino, name) { () throws(Errno) in
                try FUSEOperations.replySized(req, size) { buffer throws(Errno) in
                    try fs.core.getxattr(ino, name: name!, into: buffer)
                }
            }
        }
        ops.listxattr = { req, ino, size in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.listxattr(req, fs, size: size) }
            fs.handle(req, "listxattr", ino) { () throws(Errno) in
                try FUSEOperations.replySized(req, size) { buffer throws(Errno) in
                    try fs.core.listxattr(ino, into: buffer)
                }
            }
        }
        ops.setxattr = { req, ino, name, value, size, flags in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.changeXattr(req, fs, "setxattr", name) }
            fs.handle(req, "setxattr", ino, name) { () throws(Errno) in
                try fs.core.setxattr(ino, name: name!, value: UnsafeRawBufferPointer(start: value, count: size), flags: flags)
                fuse_reply_err(req, 0)
            }
        }
        ops.removexattr = { req, ino, name in
            let fs = FUSEBridge.of(req)
            if ControlNode.owns(ino) { return ControlNode.changeXattr(req, fs, "removexattr", name) }
            fs.handle(req, "removexattr", ino, name) { () throws(Errno) in
                try fs.core.removexattr(ino, name: name!)
                fuse_reply_err(req, 0)
            }
        }
    }

    /// The xattr reply convention: size 0 asks for the needed size, otherwise the value.
    static func replySized(_ req: fuse_req_t?, _ size: Int,
                           _ fill: (UnsafeMutableRawBufferPointer) throws(Errno) -> Int) throws(Errno) {
        if size == 0 {
            fuse_reply_xattr(req, try fill(UnsafeMutableRawBufferPointer(start: nil, count: 0)))
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
        defer { buffer.deallocate() }
        let length = try fill(buffer)
        fuse_reply_buf(req, buffer.baseAddress, length)
    }
}
