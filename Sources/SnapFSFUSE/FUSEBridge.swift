import CFUSE
import CFUSEKernel
import Glibc
import Logging
import SnapFSBacking
import SnapFSCore
import SystemPackage

/// What the FUSE callbacks reach through `fuse_req_userdata` (and libfuse's I/O callbacks
/// through the session's userdata): the core filesystem, the session's I/O channel and the
/// reply settings. Callbacks run on libfuse's worker threads; nothing here is
/// actor-isolated.
final class FUSEBridge: Sendable {
    let core: SnapFileSystem
    let channel: FUSEChannel
    let logger: Logger
    let debug: Bool
    /// How long the kernel may trust names and attributes. Every change goes through snapfs,
    /// and the kernel updates its caches on the changes it sends, so these can be long.
    let entryTimeout: Double
    let attributeTimeout: Double

    init(core: SnapFileSystem, channel: FUSEChannel, logger: Logger, debug: Bool, entryTimeout: Double,
         attributeTimeout: Double) {
        self.core = core
        self.channel = channel
        self.logger = logger
        self.debug = debug
        self.entryTimeout = entryTimeout
        self.attributeTimeout = attributeTimeout
    }

    /// Counts a request, for `status`: every request is read through ``FUSEChannel`` or
    /// taken from a ring (``FUSERing``), and counted there.
    @inline(__always)
    func count(_ request: fuse_in_header) {
        core.requests.count(opcode: request.opcode)
    }

    @inline(__always)
    static func of(_ req: fuse_req_t?) -> FUSEBridge {
        Unmanaged<FUSEBridge>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    /// Runs one request: logs it when debugging, answers an `Errno` as the error reply.
    /// `body` must reply on success.
    @inline(__always)
    func handle(_ req: fuse_req_t?, _ operation: StaticString, _ inode: UInt64,
                _ name: UnsafePointer<CChar>? = nil, detail: @autoclosure () -> String = "",
                _ body: () throws(Errno) -> Void) {
        if debug { logger.debug("\(operation) ino=\(inode)\(Self.describe(name))\(detail())") }
        CallerIdentity.serve(uid: fuse_req_ctx(req)!.pointee.uid)
        do {
            try body()
        } catch {
            if debug { logger.debug("\(operation) ino=\(inode)\(Self.describe(name)) -> \(error)") }
            fuse_reply_err(req, error.rawValue)
        }
    }

    private static func describe(_ name: UnsafePointer<CChar>?) -> String {
        guard let name else { return "" }
        return " name=\(String(decoding: UnsafeRawBufferPointer(start: name, count: strlen(name)), as: UTF8.self))"
    }

    // MARK: replies

    func entryParam(_ entry: Entry) -> fuse_entry_param {
        var param = fuse_entry_param()
        param.ino = entry.inode
        param.generation = 0
        param.attr = entry.attributes
        param.attr_timeout = entry.uncached ? 0 : attributeTimeout
        param.entry_timeout = entry.uncached ? 0 : entryTimeout
        return param
    }

    func replyEntry(_ req: fuse_req_t?, _ entry: Entry) {
        var param = entryParam(entry)
        fuse_reply_entry(req, &param)
    }

    /// A negative entry: the kernel remembers that the name does not exist.
    func replyNoEntry(_ req: fuse_req_t?) {
        var param = fuse_entry_param()
        param.entry_timeout = entryTimeout
        fuse_reply_entry(req, &param)
    }

    /// The kernel keeps attributes for the timeout, except those of a file whose dirty
    /// data in the page cache will change its times and blocks when written back.
    func replyAttributes(_ req: fuse_req_t?, _ st: stat, of inode: UInt64) {
        var st = st
        fuse_reply_attr(req, &st, core.hasDirtyData(inode) ? 0 : attributeTimeout)
    }

    static func context(_ req: fuse_req_t?) -> RequestContext {
        let ctx = fuse_req_ctx(req)!.pointee
        return RequestContext(uid: ctx.uid, gid: ctx.gid, pid: ctx.pid, umask: ctx.umask)
    }

    // MARK: handles

    static func store(_ file: OpenFile, in fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(file).toOpaque()))
    }

    @inline(__always)
    static func file(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> OpenFile {
        Unmanaged<OpenFile>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi!.pointee.fh))!).takeUnretainedValue()
    }

    static func takeFile(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> OpenFile {
        Unmanaged<OpenFile>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi!.pointee.fh))!).takeRetainedValue()
    }

    static func store(_ dir: DirectoryHandle, in fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(dir).toOpaque()))
    }

    @inline(__always)
    static func directory(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> DirectoryHandle {
        Unmanaged<DirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi!.pointee.fh))!).takeUnretainedValue()
    }

    static func takeDirectory(_ fi: UnsafeMutablePointer<fuse_file_info>?) -> DirectoryHandle {
        Unmanaged<DirectoryHandle>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi!.pointee.fh))!).takeRetainedValue()
    }
}
