import CFUSE
import Glibc
import Logging
import SnapFSBacking
import SnapFSCore

/// Mounts a ``SnapFileSystem`` with libfuse's low-level API and serves it on libfuse's
/// multi-threaded loop until it is unmounted or the process gets SIGINT/SIGTERM/SIGHUP.
public final class FUSESession {
    public struct Configuration: Sendable {
        public var mountpoint: String
        /// Options for libfuse and the kernel (`allow_other`, `ro`, `fsname=…`).
        public var fuseOptions: [String]
        public var debug = false
        public var entryTimeout: Double = 86_400
        public var attributeTimeout: Double = 86_400
        /// Worker threads libfuse keeps waiting for requests.
        public var idleThreads: UInt32 = 16
        /// Serve requests over io_uring when the kernel allows it (``FUSERing``).
        public var ring = false

        public init(mountpoint: String, fuseOptions: [String]) {
            self.mountpoint = mountpoint
            self.fuseOptions = fuseOptions
        }
    }

    public enum Failure: Error, Sendable {
        /// libfuse rejected the options; what it said.
        case badOptions(String)
        /// The kernel refused the mount; what libfuse said.
        case mountFailed(String)
    }

    private let configuration: Configuration
    private let bridge: FUSEBridge
    private var session: OpaquePointer?
    /// The snapshot engine's way into the kernel; valid once ``mount()`` succeeded.
    private var kernelLink: (any KernelLink)?
    private var arguments: [UnsafeMutablePointer<CChar>?] = []
    /// Whether to set up io_uring queues (asked for, and the kernel allows it).
    private var ringAllowed = false

    public init(core: SnapFileSystem, configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        let options = core.options
        let passthrough = options.kernelPassthrough && !options.kernelWritebackCache && geteuid() == 0
        self.bridge = FUSEBridge(core: core, channel: FUSEChannel(offersPassthrough: passthrough),
                                 logger: logger, debug: configuration.debug,
                                 entryTimeout: configuration.entryTimeout,
                                 attributeTimeout: configuration.attributeTimeout)
    }

    /// Creates the session and mounts it; the mount is usable when this returns.
    /// What libfuse prints on stderr about a failure is caught and carried in the error.
    public func mount() throws(Failure) {
        arguments = ["snapfs"].map { $0.withCString { strdup($0) } }
        if !configuration.fuseOptions.isEmpty {
            arguments += ["-o", configuration.fuseOptions.joined(separator: ",")].map { $0.withCString { strdup($0) } }
        }
        var args = arguments.withUnsafeMutableBufferPointer { buffer in
            snapfs_args_init(Int32(buffer.count), buffer.baseAddress)
        }
        var ops = FUSEOperations.make(writebackCache: bridge.core.options.kernelWritebackCache)
        let userdata = Unmanaged.passUnretained(bridge).toOpaque()
        let (created, complaint) = StandardErrorCapture.run {
            fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
        }
        fuse_opt_free_args(&args)
        guard let session = created else { throw .badOptions(complaint) }
        self.session = session
        ringAllowed = configuration.ring && FUSERing.kernelAllows(logger: bridge.logger)
        let (mounted, refusal) = StandardErrorCapture.run { fuse_session_mount(session, configuration.mountpoint) }
        guard mounted == 0 else { throw .mountFailed(refusal) }
        let core = bridge.core
        let channel = bridge.channel
        guard channel.install(on: session) else {
            fuse_session_unmount(session)
            throw .mountFailed("cannot install the session's I/O")
        }
        let link = FUSEKernelLink(session: session, mountpoint: configuration.mountpoint)
        kernelLink = link
        core.attachKernel(link)
        if channel.offersPassthrough {
            core.attachPassthrough(FUSEPassthrough(session: session, channel: channel, logger: bridge.logger))
        }
    }

    /// Serves requests until the filesystem is unmounted or the process gets SIGINT,
    /// SIGTERM or SIGHUP, then unmounts. On a signal, everything written through the
    /// mount is pushed to the daemon first (`syncfs` on the mount, from a thread that is
    /// not serving requests), so a signal loses nothing an unmount would not.
    /// Returns how the loop ended.
    public func serve() -> Ending {
        guard let session else { return .failed(-1) }
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        // Blocked here, the signals stay blocked in every worker libfuse starts; only the
        // watcher below takes them.
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let link = kernelLink
        let core = bridge.core
        let channel = bridge.channel
        let watcher = SignalWatcher(session: session, channel: channel, mountpoint: configuration.mountpoint,
                                    signals: signals) {
            link?.pushDirtyPages(of: core.inodes.openForWriting())
        }
        watcher.start()
        // Before the loop reads INIT, whose reply asks for io_uring once the rings exist.
        if ringAllowed, let ring = FUSERing(session: session, bridge: bridge) {
            channel.attach(ring)
        }
        let result = snapfs_session_loop_mt(session, configuration.idleThreads)
        channel.ring?.finished()
        fuse_session_unmount(session)
        if let signal = watcher.received { return .signal(signal) }
        return result == 0 ? .unmounted : .failed(result)
    }

    /// Unmounts a session that will not be served (start-up failed after the mount).
    public func unmount() {
        if let session { fuse_session_unmount(session) }
    }

    public enum Ending: Sendable, Equatable {
        case unmounted
        case signal(Int32)
        case failed(Int32)
    }

    deinit {
        if let session { fuse_session_destroy(session) }
        for argument in arguments { free(argument) }
    }
}
