import CLinux
import Glibc
import Logging
import SnapFSBacking
import SnapFSCache
import SnapFSCore
import SnapFSFUSE
import SnapFSReplication
import SnapFSSnapshots

/// What `snapfs mount` was asked to do: the command line, with the snapshot flags already
/// turned into `-o` options (fstab has only those).
public struct MountRequest: Sendable {
    public var backing: String
    public var mountpoint: String
    public var options: [String]
    public var foreground: Bool
    public var debug: Bool
    public var pidFile: String?
    public var logFile: String?
    /// Set in the daemon a background mount starts: where it reports ready or why not.
    public var readyFD: Int32?

    public init(backing: String, mountpoint: String, options: [String], foreground: Bool, debug: Bool,
                pidFile: String?, logFile: String?, readyFD: Int32?) {
        self.backing = backing
        self.mountpoint = mountpoint
        self.options = options
        self.foreground = foreground
        self.debug = debug
        self.pidFile = pidFile
        self.logFile = logFile
        self.readyFD = readyFD
    }
}

extension Daemon {
    /// `snapfs mount`: in the background (the command returns once the mount is ready), or
    /// serving in this process until unmounted.
    public static func mount(_ request: MountRequest) throws(CommandFailure) {
        let mountOptions = MountOptions(request.options)
        if let problem = mountOptions.problems.first { throw CommandFailure(problem, code: ExitStatus.usage) }
        if request.readyFD == nil && !request.foreground {
            try spawnAndWait(request)
            return
        }
        if request.readyFD != nil { _ = setsid() }
        let service = MountService(request: request)
        let plan: MountPlan
        do {
            plan = try MountPlan.validate(backing: request.backing, mountpoint: request.mountpoint,
                                          allowNonEmpty: mountOptions.allowNonEmpty)
        } catch {
            service.reportFailure(code: error.exitCode, message: error.message)
        }
        service.serve(plan, mountOptions)
    }
}

/// The composition root of a mount: makes the filesystem, the snapshot engine and the FUSE
/// session, connects them, serves until unmounted, and writes everything back at the end.
struct MountService {
    let request: MountRequest

    func serve(_ plan: MountPlan, _ mountOptions: MountOptions) -> Never {
        Daemon.prepareProcess()
        let level: Logger.Level = request.debug || mountOptions.debug ? .debug : .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "snapfs")
        var fsOptions = FileSystemOptions()
        fsOptions.readOnly = mountOptions.readOnly
        fsOptions.kernelWritebackCache = mountOptions.writebackCache
        fsOptions.kernelPassthrough = mountOptions.passthrough && !mountOptions.writebackCache
        fsOptions.posixACL = mountOptions.posixACL
        fsOptions.sqlite = mountOptions.sqlite
        fsOptions.cache = mountOptions.cache
        fsOptions.handleLimits = mountOptions.handleLimits(descriptorLimit: SnapFileSystem.descriptorLimit())
        // Held until the process ends (the kernel drops it then, whatever kills the daemon).
        do {
            _ = Unmanaged.passRetained(try BackingLock.acquire(backing: plan.backing))
        } catch {
            reportFailure(code: error.exitCode, message: error.message)
        }
        // Bound before the mount: a busy port refuses the mount instead of serving without metrics.
        var metricsServer: MetricsServer?
        if let address = mountOptions.metrics {
            do { metricsServer = try MetricsServer(address: address) } catch { reportFailure(code: error.code, message: error.message) }
        }
        let startedMs = SnapshotName.nowMs()
        let snapshotState = SnapshotState()
        let core: SnapFileSystem
        do {
            core = try SnapFileSystem(backingPath: plan.backing, options: fsOptions, logger: logger,
                                      snapshotState: snapshotState)
        } catch {
            reportFailure(code: ExitStatus.mountFailed, message: "cannot open backing directory \(plan.backing): \(error)")
        }
        // Checked before mounting; `.snapshots` is made once the mount succeeded, so a
        // mount that fails leaves the backing directory as it was.
        var snapshotOptions = mountOptions.snapshots
        snapshotOptions.hooks.mountpoint = plan.mountpoint
        do {
            snapshotOptions.strategy = try SnapshotEngine.chooseStrategy(backingPath: plan.backing, forced: snapshotOptions.strategy)
        } catch {
            reportFailure(code: error.errno == .notSupported ? ExitStatus.usage : ExitStatus.mountFailed, message: error.message)
        }
        var configuration = FUSESession.Configuration(
            mountpoint: plan.mountpoint,
            fuseOptions: mountOptions.fuseOptions(backing: plan.backing, asRoot: geteuid() == 0))
        configuration.debug = level == .debug
        configuration.ring = mountOptions.uring && !mountOptions.writebackCache
        let session = FUSESession(core: core, configuration: configuration, logger: logger)
        do {
            try session.mount()
        } catch {
            switch error {
            case .badOptions(let complaint):
                reportFailure(code: ExitStatus.usage, message: "bad mount options \(request.options.joined(separator: ",")): \(complaint.isEmpty ? "rejected by libfuse" : complaint)")
            case .mountFailed(let complaint):
                reportFailure(code: ExitStatus.mountFailed, message: "the kernel refused the mount of \(plan.mountpoint): \(complaint.isEmpty ? "unknown reason" : complaint)")
            }
        }
        if let pidFile = request.pidFile {
            let text = "\(getpid())\n"
            let fd = open(pidFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 { _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }; close(fd) }
        }
        // A read-only mount changes nothing, so it has nothing to snapshot (and no control file).
        var engine: SnapshotEngine?
        if !mountOptions.readOnly {
            do {
                engine = try SnapshotEngine(backingPath: plan.backing, state: snapshotState, options: snapshotOptions, logger: logger)
            } catch {
                session.unmount()
                reportFailure(code: ExitStatus.mountFailed, message: error.message)
            }
        }
        var replication: ReplicationWorker?
        if let engine {
            core.attach(engine)
            engine.startTimer()
            core.startSQLiteFlusher()
            if let settings = mountOptions.replication {
                let repository = ResticRepository(location: settings.location, passwordFile: settings.passwordFile, watch: ChildWatch())
                let worker = ReplicationWorker(
                    replicator: Replicator(backing: plan.backing, repository: repository, commitIntervalMs: settings.commitIntervalMs,
                                           retention: snapshotOptions.retention),
                    logger: logger)
                engine.attach(follower: worker)
                replication = worker
            }
        }
        core.startCacheFlusher()
        if let metricsServer {
            metricsServer.start { [engine] in
                MetricsText.render(status: engine?.statusLines() ?? core.statusLines(), nowMs: SnapshotName.nowMs(), startedMs: startedMs)
            }
        }
        reportReady()
        logger.notice("serving \(plan.backing) at \(plan.mountpoint) (snapshots: \(engine?.strategy.rawValue ?? "off"))")
        if let address = metricsServer?.address {
            logger.notice("metrics at http://\(address)/metrics\(address.isLoopback ? "" : " (not loopback: reachable from other machines)")")
        }
        engine?.logStartNotes()
        replication?.start()
        ServiceNotification.send("READY=1\nMAINPID=\(getpid())\nSTATUS=serving \(plan.backing) at \(plan.mountpoint)")
        let ending = session.serve()
        ServiceNotification.send("STOPPING=1\nSTATUS=unmounted \(plan.mountpoint); writing back")
        // A restic running now is interrupted (it removes its lock); the next mount goes on.
        replication?.stop()
        // Commits still waiting for their interval get their snapshot now.
        core.snapshotDueSQLiteCommits(all: true)
        // Normally nothing is left (close writes back); what is left is what failed.
        var lost = false
        do throws(CacheWriteBackFailure) { try core.writeBackCache() } catch {
            logger.critical("unmounted with data that could not be written back: \(error.message)")
            lost = true
        }
        // Every snapshot durable before the daemon goes (the next mount would remove the others).
        do throws(SnapshotFailure) { try engine?.makeDurable() } catch { logger.critical("at unmount: \(error.message)") }
        if let pidFile = request.pidFile { unlink(pidFile) }
        switch ending {
        case .unmounted:
            logger.notice("unmounted \(plan.mountpoint)")
            Glibc.exit(lost ? ExitStatus.writeBackFailed : ExitStatus.success)
        case .signal(let signal):
            logger.notice("unmounted \(plan.mountpoint) on signal \(signal)")
            Glibc.exit(lost ? ExitStatus.writeBackFailed : ExitStatus.success)
        case .failed(let result):
            logger.error("the request loop failed (\(result)); unmounted \(plan.mountpoint)")
            Glibc.exit(ExitStatus.mountFailed)
        }
    }

    /// Tells the waiting parent that the mount is ready, and detaches from its terminal.
    private func reportReady() {
        guard let readyFD = request.readyFD else {
            if let logFile = request.logFile { Daemon.redirectStandardError(to: logFile) }
            return
        }
        Daemon.detachOutput(logFile: request.logFile)
        Daemon.send("0\n", to: readyFD)
        close(readyFD)
    }

    /// Tells the waiting parent (or the terminal, in the foreground) why the mount failed, and exits.
    func reportFailure(code: Int32, message: String) -> Never {
        if let readyFD = request.readyFD {
            Daemon.send("\(code)\t\(message)\n", to: readyFD)
        } else {
            FileHandleStandardError.write("snapfs: \(message)\n")
        }
        Glibc.exit(code)
    }
}
