import CFUSE
import CLinux
import Glibc
import Synchronization

/// The session's I/O on `/dev/fuse`, installed through `fuse_session_custom_io` after the
/// mount. It behaves exactly like libfuse's own I/O except for two things: it adds to the
/// INIT reply two kernel features libfuse 3.14 cannot negotiate, when the kernel offers
/// them, and it answers FUSE_TMPFILE itself (``FUSETmpfile``), which libfuse 3.14 does not know.
///
/// - `FUSE_HANDLE_KILLPRIV_V2`: without it the kernel asks the daemon for the
///   `security.capability` xattr before every `write()` (one extra round trip per write —
///   11 of ~38 per SQLite commit), because only with it does FUSE set `SB_NOSEC`. With it,
///   clearing set-ID bits and capabilities on write/truncate is the daemon's job;
///   ``SnapFileSystem`` does that (see `dropPrivileges`).
/// - `FUSE_DIRECT_IO_ALLOW_MMAP`: SQLite journals and WALs are opened with direct I/O
///   (see `SnapFileSystem.writesBypassKernelCache`); with this flag a program that maps
///   such a file shared still can.
/// - `FUSE_PASSTHROUGH` (when ``install(on:offerPassthrough:)`` is asked to, and the kernel
///   offers it), with a stacking depth of 1: files opened read-only can be read by the kernel
///   straight from the backing file (``FUSEPassthrough``). libfuse 3.14 cannot say so in an
///   open reply either: ``expectOpenReply(_:)`` marks the reply the calling thread sends next,
///   and `writev` writes FOPEN_PASSTHROUGH and the backing id into its `fuse_open_out`.
/// - `FUSE_OVER_IO_URING` (when ``FUSESession`` set up ``ring`` before serving, and the
///   kernel offers it): requests then come through per-CPU io_uring queues (``FUSERing``),
///   each served on a thread pinned to its CPU; replies to them are handed to the ring by
///   `writev` and `splice_send`. FORGET, INTERRUPT and notifications stay on `/dev/fuse`.
enum FUSEChannel {
    private static let fuseInit: UInt32 = 26
    private static let handleKillprivV2: UInt32 = 1 << 28
    private static let initExtended: UInt32 = 1 << 30
    /// `FUSE_DIRECT_IO_ALLOW_MMAP` (bit 36) in the second flags word.
    private static let directIOAllowMmap: UInt32 = 1 << 4
    /// `FUSE_PASSTHROUGH` (bit 37) in the second flags word.
    private static let passthroughFlag: UInt32 = 1 << 5
    /// `FUSE_OVER_IO_URING` (bit 41) in the second flags word.
    private static let overIOURing: UInt32 = 1 << 9
    /// `FUSE_MAX_PAGES` in the first flags word of the INIT reply.
    private static let maxPagesFlag: UInt32 = 1 << 22
    /// `FOPEN_PASSTHROUGH` in `fuse_open_out.open_flags`.
    private static let fopenPassthrough: UInt32 = 1 << 7
    /// Whether to ask for passthrough (set before the mount).
    private static let wantsPassthrough = Atomic<Bool>(false)
    /// Whether the INIT reply asked for passthrough, the kernel having offered it.
    static let passthroughNegotiated = Atomic<Bool>(false)
    /// The rings, set up before the mount is served; nil: requests come through `/dev/fuse`.
    nonisolated(unsafe) static var ring: FUSERing?
    /// The payload size the rings need, once the INIT reply asked for io_uring (0 before).
    private static let ringPayload = Atomic<Int>(0)
    /// The `unique` of the INIT request once read; 0 otherwise.
    private static let pendingInit = Atomic<UInt64>(0)
    /// What the kernel offered of the flags added to the reply (first word, second word).
    private static let offeredFlags = Atomic<UInt64>(0)

    static func install(on session: OpaquePointer, offerPassthrough: Bool) -> Bool {
        wantsPassthrough.store(offerPassthrough, ordering: .sequentiallyConsistent)
        var io = fuse_custom_io()
        io.read = { fd, buffer, length, userdata in
            // With the rings, only FORGET and INTERRUPT come this way, and the request that
            // wakes the loop at a signal goes to a ring: readers also wait for ``wakeReaders()``.
            if FUSEChannel.ring != nil, !FUSEChannel.waitForRequest(fd) {
                errno = EINTR
                return -1
            }
            let bridge = userdata.map { Unmanaged<FUSEBridge>.fromOpaque($0).takeUnretainedValue() }
            var count = Glibc.read(fd, buffer, length)
            if count >= 40, let buffer { FUSEChannel.countRequest(buffer, bridge) }
            // Requests libfuse does not know are answered here; then read the next one.
            while count >= 40, let buffer, buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == FUSETmpfile.opcode {
                FUSETmpfile.serve(UnsafeRawBufferPointer(start: buffer, count: count), fd: fd, bridge: bridge)
                count = Glibc.read(fd, buffer, length)
                if count >= 40 { FUSEChannel.countRequest(buffer, bridge) }
            }
            if count >= 56, let buffer, buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self) == FUSEChannel.fuseInit {
                FUSEChannel.noteInit(UnsafeRawBufferPointer(start: buffer, count: count))
            }
            return count
        }
        io.writev = { fd, iov, count, _ in
            var initAnswered = false
            if let iov, count >= 2, FUSEChannel.pendingInit.load(ordering: .relaxed) != 0 {
                initAnswered = FUSEChannel.patchInitReply(iov)
            }
            let backingID = snapfs_take_pending_backing_id()
            if backingID > 0, let iov, count >= 2 { FUSEChannel.patchOpenReply(iov, backingID: backingID) }
            if let iov, count >= 1 {
                let captured = snapfs_uring_capture(iov, count)
                if captured >= 0 { return captured }
            }
            let written = Glibc.writev(fd, iov, count)
            if initAnswered { FUSEChannel.initAnswered(written: written > 0) }
            return written
        }
        io.splice_send = { fdIn, offIn, fdOut, offOut, length, flags, _ in
            if snapfs_uring_serving() != 0 { return snapfs_uring_capture_pipe(fdIn, length) }
            return snapfs_splice(fdIn, offIn, fdOut, offOut, length, flags)
        }
        return fuse_session_custom_io(session, &io, fuse_session_fd(session)) == 0
    }

    /// Counts a request just read (its opcode is at offset 4 of the fuse_in_header), for
    /// `status`: every request comes through here or through a ring (``FUSERing``).
    @inline(__always)
    static func countRequest(_ request: UnsafeRawPointer, _ bridge: FUSEBridge?) {
        bridge?.core.requests.count(opcode: request.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    }

    /// The INIT request: fuse_in_header (40 bytes: len, opcode, unique …), then
    /// fuse_init_in (major, minor, max_readahead, flags, flags2 …).
    private static func noteInit(_ request: UnsafeRawBufferPointer) {
        let flags = request.loadUnaligned(fromByteOffset: 52, as: UInt32.self)
        var offered = UInt64(flags & handleKillprivV2)
        if flags & initExtended != 0, request.count >= 60 {
            let flags2 = request.loadUnaligned(fromByteOffset: 56, as: UInt32.self)
            var wanted = directIOAllowMmap
            if wantsPassthrough.load(ordering: .relaxed) { wanted |= passthroughFlag }
            if ring != nil { wanted |= overIOURing }
            offered |= UInt64(flags2 & wanted) << 32
        }
        offeredFlags.store(offered, ordering: .sequentiallyConsistent)
        pendingInit.store(request.loadUnaligned(fromByteOffset: 8, as: UInt64.self), ordering: .sequentiallyConsistent)
    }

    /// The INIT reply: fuse_out_header, then fuse_init_out (flags at 12, max_write at 20,
    /// max_pages at 28, flags2 at 32). Returns whether this was the INIT reply.
    private static func patchInitReply(_ iov: UnsafeMutablePointer<iovec>) -> Bool {
        guard let header = iov[0].iov_base, iov[0].iov_len >= 16,
              let body = iov[1].iov_base, iov[1].iov_len >= 16 else { return false }
        let unique = header.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        let error = header.loadUnaligned(fromByteOffset: 4, as: Int32.self)
        guard error == 0, pendingInit.compareExchange(expected: unique, desired: 0, ordering: .sequentiallyConsistent).exchanged else { return false }
        let offered = offeredFlags.load(ordering: .sequentiallyConsistent)
        var flags = body.loadUnaligned(fromByteOffset: 12, as: UInt32.self) | UInt32(truncatingIfNeeded: offered)
        let added2 = UInt32(truncatingIfNeeded: offered >> 32)
        if added2 != 0, iov[1].iov_len >= 36 {
            flags |= initExtended
            let flags2 = body.loadUnaligned(fromByteOffset: 32, as: UInt32.self)
            body.storeBytes(of: flags2 | added2, toByteOffset: 32, as: UInt32.self)
            if added2 & passthroughFlag != 0, iov[1].iov_len >= 40 {
                // max_stack_depth: backing files on a filesystem that is not stacked itself.
                body.storeBytes(of: UInt32(1), toByteOffset: 36, as: UInt32.self)
                passthroughNegotiated.store(true, ordering: .sequentiallyConsistent)
            }
            if added2 & overIOURing != 0, iov[1].iov_len >= 32 {
                // The kernel's ring payload: max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages).
                let maxWrite = Int(body.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
                let maxPages = flags & maxPagesFlag != 0 ? Int(body.loadUnaligned(fromByteOffset: 28, as: UInt16.self)) : 32
                ringPayload.store(max(8192, maxWrite, maxPages * Int(getpagesize())), ordering: .sequentiallyConsistent)
            }
        }
        body.storeBytes(of: flags, toByteOffset: 12, as: UInt32.self)
        return true
    }

    /// The INIT reply was written: the rings register (or, when io_uring was not agreed,
    /// their threads end).
    private static func initAnswered(written: Bool) {
        guard let ring else { return }
        let payload = ringPayload.load(ordering: .sequentiallyConsistent)
        if written, payload > 0 { ring.start(payloadSize: payload) } else { ring.cancel() }
    }

    /// Makes readers of `/dev/fuse` return (EINTR), so that libfuse's loop sees that the
    /// session was told to exit.
    static func wakeReaders() {
        var byte: UInt8 = 1
        if wakePipe[1] >= 0 { _ = Glibc.write(wakePipe[1], &byte, 1) }
    }

    /// A pipe made with the rings; its read end is readable once ``wakeReaders()`` was called.
    nonisolated(unsafe) static var wakePipe: [Int32] = [-1, -1]
    private static var wakeFD: Int32 { wakePipe[0] }

    /// Waits until `fd` has a request (true) or the readers are woken (false).
    private static func waitForRequest(_ fd: Int32) -> Bool {
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
    static func expectOpenReply(_ id: Int32?) {
        snapfs_set_pending_backing_id(id ?? 0)
    }

    /// An OPEN or CREATE reply: its last 16 bytes are the fuse_open_out (fh, open_flags,
    /// backing_id).
    private static func patchOpenReply(_ iov: UnsafeMutablePointer<iovec>, backingID: Int32) {
        guard let header = iov[0].iov_base, iov[0].iov_len >= 16, header.loadUnaligned(fromByteOffset: 4, as: Int32.self) == 0,
              let body = iov[1].iov_base, iov[1].iov_len >= 16 else { return }
        let openOut = iov[1].iov_len - 16
        let flags = body.loadUnaligned(fromByteOffset: openOut + 8, as: UInt32.self)
        body.storeBytes(of: flags | fopenPassthrough, toByteOffset: openOut + 8, as: UInt32.self)
        body.storeBytes(of: backingID, toByteOffset: openOut + 12, as: Int32.self)
    }
}
