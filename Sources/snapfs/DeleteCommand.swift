import ArgumentParser
import Glibc
import SnapFSBacking
import SnapFSDaemon
import Synchronization

struct DeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete one snapshot.",
        discussion: "A held snapshot cannot be deleted: release it first.\n\n\(ExitStatus.help)"
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Argument(help: "The snapshot's name.")
    var name: String

    func run() throws {
        let mount = try MountedSnapshots(mountpoint)
        _ = try mount.snapshot(name)
        let progress = TerminalProgress("entries removed", json: false)
        let watcher = progress.enabled ? DeletionWatcher(mountpoint: mountpoint, name: name, progress: progress) : nil
        watcher?.start()
        let reply: ControlClient.Reply
        do {
            reply = try mount.control.send("delete \(name)", action: "delete snapshots")
        } catch {
            watcher?.stop()
            progress.finish()
            throw error
        }
        watcher?.stop()
        progress.finish()
        if !reply.succeeded {
            switch reply.failureErrno {
            case ENOENT: throw CLIFailure("there is no snapshot named \(name) in \(mountpoint)", code: ExitStatus.unknownSnapshot)
            case EBUSY: throw CLIFailure("\(name) is held; release it first (snapfs release)", code: ExitStatus.daemonFailed)
            default: throw CLIFailure("deleting \(name) failed: \(reply.failureMessage)", code: ExitStatus.daemonFailed)
            }
        }
        print("deleted \(name)")
    }
}

/// The progress of a `delete` on a terminal: the daemon removes the tree while the command
/// waits on its control file, so a thread reads the daemon's `deleting: NAME (N entries
/// removed)` status line through a second open of the control file, every 100 ms.
private final class DeletionWatcher: @unchecked Sendable {
    let mountpoint: String
    let name: String
    let progress: TerminalProgress
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?

    init(mountpoint: String, name: String, progress: TerminalProgress) {
        self.mountpoint = mountpoint
        self.name = name
        self.progress = progress
    }

    /// Starts the thread (none if none can be made: then no progress is shown).
    func start() {
        thread = ThreadBody.spawn { [self] in
            let control = ControlClient(mountpoint: mountpoint)
            while true {
                usleep(100_000)
                if stopping.load(ordering: .acquiring) { return }
                guard let line = try? control.send(nil).value("deleting"),
                      line.hasPrefix(name + " ("), let count = Int(line.dropFirst(name.count + 2).prefix { $0.isNumber })
                else { continue }
                progress.show(count)
            }
        }
    }

    /// Stops the thread and waits for it, so that nothing is written after.
    func stop() {
        stopping.store(true, ordering: .releasing)
        if let thread { pthread_join(thread, nil) }
    }
}
