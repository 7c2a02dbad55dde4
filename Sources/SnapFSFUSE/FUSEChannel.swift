import CFUSE
import CFUSEKernel
import CLinux
import Glibc
import Synchronization

/// The session's I/O on `/dev/fuse`, installed through `fuse_session_custom_io` after the
/// mount. It behaves exactly like libfuse's own I/O except for two things: it adds to the
/// INIT reply kernel features libfuse 3.14 cannot negotiate, when the kernel offers them,
/// and it answers FUSE_TMPFILE itself (``FUSETmpfile``), which libfuse 3.14 does not know.
///
/// - `FUSE_HANDLE_KILLPRIV_V2`: without it the kernel asks the daemon for the
///   `security.capability` xattr before every `write()` (one extra round trip per write —
///   11 of ~38 per SQLite commit), because only with it does FUSE set `SB_NOSEC`. With it,
///   clearing set-ID bits and capabilities on write/truncate is the daemon's job;
///   ``SnapFileSystem`` does that (see `dropPrivileges`).
/// - `FUSE_DIRECT_IO_ALLOW_MMAP`: SQLite journals and WALs are opened with direct I/O
///   (see `SnapFileSystem.writesBypassKernelCache`); with this flag a program that maps
///   such a file shared still can.
/// - `FUSE_PASSTHROUGH` (when ``offersPassthrough``, and the kernel offers it), with a
///   stacking depth of 1: files opened read-only can be read by the kernel straight from
///   the backing file (``FUSEPassthrough``). libfuse 3.14 cannot say so in an open reply
///   either: ``expectOpenReply(_:)`` marks the reply the calling thread sends next, and
///   `writev` writes FOPEN_PASSTHROUGH and the backing id into its `fuse_open_out`.
/// - `FUSE_OVER_IO_URING` (when ``FUSESession`` attached a ``FUSERing`` before serving, and
///   the kernel offers it): requests then come through per-CPU io_uring queues, each served
///   on a thread pinned to its CPU; replies to them are handed to the ring by `writev` and
///   `splice_send`. FORGET, INTERRUPT and notifications stay on `/dev/fuse`.
///
/// libfuse's I/O callbacks reach the channel through the session's userdata, the
/// ``FUSEBridge``, which holds it.
final class FUSEChannel: Sendable {
    /// Whether to ask for passthrough.
    let offersPassthrough: Bool
    /// Whether the INIT reply asked for passthrough, the kernel having offered it.
    let passthroughNegotiated = Atomic<Bool>(false)
    /// The rings, attached before the session is served; nil: requests come through `/dev/fuse`.
    private let attachedRing = Mutex<FUSERing?>(nil)
    /// The read end of the attached rings' wake pipe (-1 without rings), looked at before
    /// every read of `/dev/fuse`.
    private let ringWakeFD = Atomic<Int32>(-1)
    /// The payload size the rings need, once the INIT reply asked for io_uring (0 before).
    private let ringPayload = Atomic<Int>(0)
    /// The `unique` of the INIT request once read; 0 otherwise.
    private let pendingInit = Atomic<UInt64>(0)
    /// What the kernel offered of the flags added to the reply (first word, second word).
    private let offeredFlags = Atomic<UInt64>(0)
    /// Per thread: the backing id the open reply the thread sends next carries (none: no
    /// value). A reply is written on the thread that makes it, from inside `fuse_reply_open`
    /// or `fuse_reply_create`, and libfuse's `writev` is not told which request it answers.
    private let pendingBackingID: pthread_key_t

    init(offersPassthrough: Bool) {
        self.offersPassthrough = offersPassthrough
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "no thread-specific key left")
        pendingBackingID = key
    }

    deinit {
        pthread_key_delete(pendingBackingID)
    }

    @inline(__always)
    private static func bridge(_ userdata: UnsafeMutableRawPointer?) -> FUSEBridge {
        Unmanaged<FUSEBridge>.fromOpaque(userdata!).takeUnretainedValue()
    }

    /// Makes this the I/O of `session`, whose userdata is the bridge holding this channel.
    func install(on session: OpaquePointer) -> Bool {
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            let bridge = FUSEChannel.bridge(userdata)
            return bridge.channel.read(fd, buffer, length, bridge: bridge)
        }
        io.writev = { fd, iov, count, userdata in
            FUSEChannel.bridge(userdata).channel.writev(fd, iov, count)
        }
        io.splice_send = { fdIn, offIn, fdOut, offOut, length, flags, _ in
            if snapfs_uring_serving() != 0 { return snapfs_uring_capture_pipe(fdIn, length) }
            return snapfs_splice(fdIn, offIn, fdOut, offOut, length, flags)
        }
        return fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0
    }

    /// The rings that serve requests from now on (before the session's loop starts).
    func attach(_ ring: FUSERing) {
        attachedRing.withLock { $0 = ring }
        ringWakeFD.store(ring.wakeFD, ordering: .releasing)
    }

    var ring: FUSERing? { attachedRing.withLock { $0 } }

    private func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ length: Int, bridge: FUSEBridge) -> Int {
        // With the rings, only FORGET and INTERRUPT come this way, and the request that
        // wakes the loop at a signal goes to a ring: readers also wait for ``wakeReaders()``.
        let wakeFD = ringWakeFD.load(ordering: .acquiring)
        if wakeFD >= 0, !Self.waitForRequest(fd, wakeFD: wakeFD) {
            errno = EINTR
            return -1
        }
        guard let buffer else { return Glibc.read(fd, buffer, length) }
        var count = Glibc.read(fd, buffer, length)
        // Requests libfuse does not know are answered here; then read the next one.
        while count >= FUSEKernelABI.inHeaderSize {
            let header = FUSEKernelABI.header(of: buffer)
            bridge.count(header)
            if header.opcode == FUSEKernelABI.tmpfileOpcode {
                FUSETmpfile.serve(UnsafeRawBufferPointer(start: buffer, count: count), fd: fd, bridge: bridge)
                count = Glibc.read(fd, buffer, length)
                continue
            }
            if header.opcode == FUSEKernelABI.initOpcode,
               count >= FUSEKernelABI.inHeaderSize + FUSEKernelABI.end(of: \fuse_init_in.flags) {
                noteInit(UnsafeRawBufferPointer(start: buffer, count: count))
            }
            break
        }
        return count
    }

    private func writev(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>?, _ count: Int32) -> Int {
        var initAnswered = false
        if let iov, count >= 2, pendingInit.load(ordering: .relaxed) != 0 {
            initAnswered = patchInitReply(iov)
        }
        if let backingID = takeBackingID(), let iov, count >= 2 { Self.patchOpenReply(iov, backingID: backingID) }
        if let iov, count >= 1 {
            let captured = snapfs_uring_capture(iov, count)
            if captured >= 0 { return captured }
        }
        let written = Glibc.writev(fd, iov, count)
        if initAnswered { self.initAnswered(written: written > 0) }
        return written
    }

    /// The INIT request: fuse_in_header, then fuse_init_in, of which `request` holds at
    /// least `flags`.
    private func noteInit(_ request: UnsafeRawBufferPointer) {
        let header = FUSEKernelABI.header(of: request.baseAddress!)
        var body = fuse_init_in()
        let length = FUSEKernelABI.load(&body, from: UnsafeRawBufferPointer(rebasing: request[FUSEKernelABI.inHeaderSize...]))
        var offered = UInt64(body.flags & FUSEKernelABI.handleKillprivV2)
        if body.flags & FUSEKernelABI.initExtended != 0, length >= FUSEKernelABI.end(of: \fuse_init_in.flags2) {
            var wanted = FUSEKernelABI.directIOAllowMmap
            if offersPassthrough { wanted |= FUSEKernelABI.passthrough }
            if ring != nil { wanted |= FUSEKernelABI.overIOURing }
            offered |= UInt64(body.flags2 & wanted) << 32
        }
        offeredFlags.store(offered, ordering: .sequentiallyConsistent)
        pendingInit.store(header.unique, ordering: .sequentiallyConsistent)
    }

    /// The INIT reply: fuse_out_header, then fuse_init_out. Returns whether this was the
    /// INIT reply.
    private func patchInitReply(_ iov: UnsafeMutablePointer<iovec>) -> Bool {
        guard let headerBytes = iov[0].iov_base, iov[0].iov_len >= FUSEKernelABI.outHeaderSize,
              let body = iov[1].iov_base, iov[1].iov_len >= FUSEKernelABI.end(of: \fuse_init_out.flags) else { return false }
        let header = headerBytes.loadUnaligned(as: fuse_out_header.self)
        guard header.error == 0,
              pendingInit.compareExchange(expected: header.unique, desired: 0, ordering: .sequentiallyConsistent).exchanged
        else { return false }
        let offered = offeredFlags.load(ordering: .sequentiallyConsistent)
        var reply = fuse_init_out()
        let length = FUSEKernelABI.load(&reply, from: UnsafeRawBufferPointer(start: body, count: iov[1].iov_len))
        reply.flags |= UInt32(truncatingIfNeeded: offered)
        let added2 = UInt32(truncatingIfNeeded: offered >> 32)
        if added2 != 0, length >= FUSEKernelABI.end(of: \fuse_init_out.flags2) {
            reply.flags |= FUSEKernelABI.initExtended
            reply.flags2 |= added2
            if added2 & FUSEKernelABI.passthrough != 0, length >= FUSEKernelABI.maxStackDepthEnd {
                // max_stack_depth: backing files on a filesystem that is not stacked itself.
                snapfs_fuse_set_max_stack_depth(&reply, 1)
                passthroughNegotiated.store(true, ordering: .sequentiallyConsistent)
            }
            if added2 & FUSEKernelABI.overIOURing != 0 {
                // The kernel's ring payload: max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages).
                let maxPages = reply.flags & FUSEKernelABI.maxPages != 0 ? Int(reply.max_pages) : FUSEKernelABI.defaultMaxPages
                ringPayload.store(max(FUSEKernelABI.minReadBuffer, Int(reply.max_write), maxPages * Int(getpagesize())),
                                  ordering: .sequentiallyConsistent)
            }
        }
        FUSEKernelABI.store(reply, count: length, into: body)
        return true
    }

    /// The INIT reply was written: the rings register (or, when io_uring was not agreed,
    /// their threads end).
    private func initAnswered(written: Bool) {
        guard let ring else { return }
        let payload = ringPayload.load(ordering: .sequentiallyConsistent)
        if written, payload > 0 { ring.start(payloadSize: payload) } else { ring.cancel() }
    }

    /// Makes readers of `/dev/fuse` return (EINTR), so that libfuse's loop sees that the
    /// session was told to exit.
    func wakeReaders() {
        ring?.wakeReaders()
    }

    /// Waits until `fd` has a request (true) or the readers are woken (false).
    private static func waitForRequest(_ fd: Int32, wakeFD: Int32) -> Bool {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        while poll(&fds, 2, -1) < 0, errno == EINTR {}
        return fds[1].revents == 0
    }

    /// A reply built by snapfs itself (FUSE_TMPFILE): to the ring entry of the request this
    /// thread serves, or to `/dev/fuse`. Returns whether it all went out.
    static func send(_ reply: UnsafeRawBufferPointer, fd: Int32) -> Bool {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: reply.baseAddress), iov_len: reply.count)
        let captured = snapfs_uring_capture(&vector, 1)
        if captured >= 0 { return captured == reply.count }
        return Glibc.write(fd, reply.baseAddress, reply.count) == reply.count
    }

    /// The next reply this thread sends opens a file with backing file `id` (nil: it does not).
    func expectOpenReply(_ id: Int32?) {
        let value = id.flatMap { $0 > 0 ? UnsafeRawPointer(bitPattern: Int($0)) : nil }
        pthread_setspecific(pendingBackingID, value)
    }

    /// The backing id the reply being written carries, if any; the reply takes it.
    @inline(__always)
    private func takeBackingID() -> Int32? {
        guard let value = pthread_getspecific(pendingBackingID) else { return nil }
        pthread_setspecific(pendingBackingID, nil)
        return Int32(truncatingIfNeeded: Int(bitPattern: value))
    }

    /// An OPEN or CREATE reply: the body ends with its fuse_open_out.
    private static func patchOpenReply(_ iov: UnsafeMutablePointer<iovec>, backingID: Int32) {
        let size = MemoryLayout<fuse_open_out>.size
        guard let headerBytes = iov[0].iov_base, iov[0].iov_len >= FUSEKernelABI.outHeaderSize,
              headerBytes.loadUnaligned(as: fuse_out_header.self).error == 0,
              let body = iov[1].iov_base, iov[1].iov_len >= size else { return }
        let at = iov[1].iov_len - size
        var open = body.loadUnaligned(fromByteOffset: at, as: fuse_open_out.self)
        open.open_flags |= FUSEKernelABI.fopenPassthrough
        snapfs_fuse_set_backing_id(&open, backingID)
        body.storeBytes(of: open, toByteOffset: at, as: fuse_open_out.self)
    }
}
