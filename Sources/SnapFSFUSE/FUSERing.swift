import CFUSE
import CFUSEKernel
import Glibc
import Logging
import Synchronization
import SystemPackage

/// FUSE over io_uring (Linux ≥ 6.14): one request queue per CPU, served by threads pinned
/// to that CPU (``entriesPerQueue`` each, one ring entry per thread), so that a request and
/// its reply are a wake-up on the CPU that made it rather than across CPUs. Each thread
/// commits a reply and fetches the next request in one system call. The kernel sends
/// FORGET, INTERRUPT and the first requests before the rings are ready through `/dev/fuse`,
/// which libfuse's loop keeps serving. The ring mechanics are in C (`FUSERing.c`); this
/// hands each request to libfuse as if it had been read from `/dev/fuse`.
///
/// The kernel offers io_uring only when the fuse module's `enable_uring` parameter is on;
/// run as root, this turns it on (it only allows connections to ask for it). If anything
/// fails before or during registration, requests keep coming through `/dev/fuse`.
///
/// With the rings, libfuse's loop still reads `/dev/fuse` (FORGET, INTERRUPT), but the
/// request that wakes it at a signal goes to a ring: its readers also wait on a pipe of the
/// ring's (``wakeFD``), written by ``wakeReaders()``.
final class FUSERing: @unchecked Sendable {
    static let entriesPerQueue: Int32 = 4
    private static let parameter = "/sys/module/fuse/parameters/enable_uring"

    private final class Context {
        let session: OpaquePointer
        let bridge: FUSEBridge
        let fd: Int32

        init(session: OpaquePointer, bridge: FUSEBridge) {
            self.session = session
            self.bridge = bridge
            self.fd = fuse_session_fd(session)
        }
    }

    private let handle: OpaquePointer
    private let context: Unmanaged<Context>
    private let logger: Logger
    private let started = Atomic<Bool>(false)
    /// The wake pipe: readable once ``wakeReaders()`` was called.
    let wakeFD: Int32
    private let wakeWriteFD: Int32

    init?(session: OpaquePointer, bridge: FUSEBridge) {
        logger = bridge.logger
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return nil }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let context = Unmanaged.passRetained(Context(session: session, bridge: bridge))
        let created = snapfs_uring_create(fuse_session_fd(session), Self.entriesPerQueue, { context, request, length in
            guard let context, let request else { return }
            let ring = Unmanaged<Context>.fromOpaque(context).takeUnretainedValue()
            guard length >= FUSEKernelABI.inHeaderSize else { return }
            let header = FUSEKernelABI.header(of: request)
            ring.bridge.count(header)
            if header.opcode == FUSEKernelABI.tmpfileOpcode {
                FUSETmpfile.serve(UnsafeRawBufferPointer(start: request, count: length), fd: ring.fd, bridge: ring.bridge)
                return
            }
            var buffer = fuse_buf()
            buffer.size = length
            buffer.mem = request
            fuse_session_process_buf(ring.session, &buffer)
        }, context.toOpaque())
        guard let created else {
            bridge.logger.warning("io_uring: cannot set up the rings (\(Errno(rawValue: errno))); requests go through /dev/fuse")
            context.release()
            for end in ends { close(end) }
            return nil
        }
        self.handle = created
        self.context = context
        wakeFD = ends[0]
        wakeWriteFD = ends[1]
    }

    /// Whether the fuse module lets connections use io_uring, turning it on if it can.
    /// Asked before the mount: the kernel decides what its INIT request offers then.
    static func kernelAllows(logger: Logger) -> Bool {
        let fd = open(parameter, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            logger.warning("io_uring: this kernel's FUSE has no io_uring support (\(parameter)); requests go through /dev/fuse")
            return false
        }
        defer { close(fd) }
        var value: UInt8 = 0
        guard pread(fd, &value, 1, 0) == 1 else { return false }
        if value == UInt8(ascii: "Y") { return true }
        var on = UInt8(ascii: "Y")
        guard pwrite(fd, &on, 1, 0) == 1 else {
            logger.warning("io_uring: \(parameter) is off and cannot be turned on (\(Errno(rawValue: errno))); requests go through /dev/fuse")
            return false
        }
        logger.notice("io_uring: turned on \(parameter)")
        return true
    }

    /// The INIT reply asked for io_uring and was written: the threads register.
    func start(payloadSize: Int) {
        let result = snapfs_uring_start(handle, payloadSize)
        if result == 0 {
            started.store(true, ordering: .releasing)
            logger.notice("io_uring: \(snapfs_uring_queues(handle)) queues, \(Self.entriesPerQueue) entries each, \(payloadSize)-byte payloads")
        } else {
            logger.warning("io_uring: registration refused (\(Errno(rawValue: -result))); requests go through /dev/fuse")
        }
    }

    /// Makes the readers of `/dev/fuse` waiting on ``wakeFD`` return.
    func wakeReaders() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWriteFD, &byte, 1)
    }

    /// io_uring was not agreed: the threads end.
    func cancel() {
        snapfs_uring_cancel(handle)
    }

    /// The session ended (the kernel ends the rings' entries with the connection).
    func finished() {
        snapfs_uring_cancel(handle)
        if started.load(ordering: .acquiring) { logger.notice("io_uring: \(snapfs_uring_served(handle)) requests served through the rings") }
    }
}
