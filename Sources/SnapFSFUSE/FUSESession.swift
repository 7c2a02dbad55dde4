import CFUSE
import Glibc
import Logging
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

        public init(mountpoint: String, fuseOptions: [String]) {
            self.mountpoint = mountpoint
            self.fuseOptions = fuseOptions
        }
    }

    public enum Failure: Error, Sendable {
        /// libfuse rejected the options (it printed why on stderr).
        case badOptions
        /// The kernel mount failed (libfuse printed why on stderr).
        case mountFailed
        case signalHandlers
    }

    private let configuration: Configuration
    private let bridge: FUSEBridge
    private var session: OpaquePointer?
    private var arguments: [UnsafeMutablePointer<CChar>?] = []

    public init(core: SnapFileSystem, configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.bridge = FUSEBridge(core: core, logger: logger, debug: configuration.debug,
                                 entryTimeout: configuration.entryTimeout,
                                 attributeTimeout: configuration.attributeTimeout)
    }

    /// Creates the session and mounts it; the mount is usable when this returns.
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
        guard let session = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata) else {
            throw .badOptions
        }
        fuse_opt_free_args(&args)
        self.session = session
        guard fuse_set_signal_handlers(session) == 0 else { throw .signalHandlers }
        guard fuse_session_mount(session, configuration.mountpoint) == 0 else {
            fuse_remove_signal_handlers(session)
            throw .mountFailed
        }
        guard FUSEChannel.install(on: session) else {
            fuse_session_unmount(session)
            throw .mountFailed
        }
    }

    /// Serves requests until unmount or a termination signal, then unmounts.
    /// Returns libfuse's loop result (0 on a clean end).
    public func serve() -> Int32 {
        guard let session else { return -1 }
        let result = snapfs_session_loop_mt(session, configuration.idleThreads)
        fuse_session_unmount(session)
        return result
    }

    deinit {
        if let session {
            fuse_remove_signal_handlers(session)
            fuse_session_destroy(session)
        }
        for argument in arguments { free(argument) }
    }
}
