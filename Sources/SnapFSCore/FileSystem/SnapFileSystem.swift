import CLinux
import Glibc
import Logging
import SnapFSBacking
import SnapFSCache
import SnapFSSQLite
import SnapFSSnapshots
import SystemPackage

/// The filesystem snapfs serves: every operation the kernel can ask for, carried out on
/// the backing directory through descriptors (`*at` calls relative to `SNAPFS_O_PATH` handles,
/// never joined path strings), so a symlink in the backing tree cannot lead outside it.
///
/// Operations return values or throw `Errno`; the FUSE layer only translates.
public final class SnapFileSystem: Sendable {
    public let options: FileSystemOptions
    public let inodes: InodeTable
    let proc: ProcSelfFD
    let logger: Logger
    /// The stages every change passes (``mutate(_:_:)``).
    let pipeline: MutationPipeline
    /// Whether the daemon may give files away (it runs as root).
    let canChown: Bool
    /// The freeze gate, change tracking and copy-up generation shared with the snapshot engine.
    public let snapshotState: SnapshotState
    /// The engine behind the control file, attached after both exist (``attach(_:)``).
    let engineAttachment = Attachment<SnapshotEngine>()
    /// FUSE passthrough, attached by the FUSE layer when the kernel has it.
    let passthroughKernel = Attachment<any KernelPassthrough>()
    /// SQLite commit detection (`SnapFSSQLite`; the filesystem's side in `SQLite/`).
    public let sqlite: SQLiteCommitDetector
    /// The filesystem's side of commit detection: directory paths, journals the kernel writes.
    let sqliteNodes = SQLiteNodes()
    /// The backing root as `/proc/self/fd` links show it, for paths relative to the root.
    let rootPath: String
    /// snapfs's page cache of regular files' data (nil: off; see SnapFileSystem+Cache).
    public let cache: PageCache?
    let cacheStore: InodeCacheStore
    /// Whether the backing filesystem is short of space for the kernel's write-back cache.
    let space: SpaceWatch
    /// Open files and directories held for each user, bounded per user.
    public let handles: HandleLedger
    /// Requests the kernel sent, by kind (counted by the FUSE layer; shown in `status`).
    public let requests = RequestCounts()

    /// The way back into the kernel, attached by the FUSE layer once the mount is up
    /// (before any request is served).
    let kernel = Attachment<any KernelLink>()

    public func attachKernel(_ link: any KernelLink) {
        kernel.attach(link)
    }

    /// The snapshot engine behind `.snapfs-control`, if one is attached.
    public var engine: SnapshotEngine? { engineAttachment.value }

    /// Makes `engine` take this filesystem's snapshots: the control file, the SQLite
    /// commits and the engine's own flushes go through it from now on.
    public func attach(_ engine: SnapshotEngine) {
        engineAttachment.attach(engine)
        engine.attach(self)
        sqlite.policy.useAutoFloor(ms: engine.strategy.commitSnapshotFloorMs)
    }

    /// Opens the backing directory at `backingPath`.
    public init(backingPath: String, options: FileSystemOptions = FileSystemOptions(),
                observer: (any MutationObserver)? = nil,
                logger: Logger = Logger(label: "snapfs"),
                descriptorBudget: Int? = nil, snapshotState: SnapshotState = SnapshotState()) throws(Errno) {
        let rootFD = try syscall(snapfs_openat(AT_FDCWD, backingPath, SNAPFS_O_PATH | O_DIRECTORY | O_CLOEXEC, 0))
        do throws(Errno) {
            self.inodes = try InodeTable(rootFD: rootFD, descriptorBudget: descriptorBudget)
        } catch {
            close(rootFD)
            throw error
        }
        self.proc = try ProcSelfFD()
        self.rootPath = proc.target(of: rootFD) ?? backingPath
        self.sqlite = SQLiteCommitDetector(options: options.readOnly ? SQLiteOptions.disabled : options.sqlite)
        self.cache = options.cache.configuration.map { PageCache($0) }
        self.cacheStore = InodeCacheStore(inodes: inodes, proc: proc)
        let root = inodes.root
        self.space = SpaceWatch(reserve: SpaceWatch.reserve(cacheBytes: options.cache.size)) {
            var fs = statvfs()
            let ok = (try? root.withFD { (fd) throws(Errno) -> Bool in fstatvfs(fd, &fs) == 0 }) ?? false
            return ok ? Int64(fs.f_bavail) * Int64(fs.f_frsize) : nil
        }
        self.options = options
        self.pipeline = MutationPipeline(readOnly: options.readOnly, observer: observer)
        self.logger = logger
        self.canChown = geteuid() == 0
        self.handles = HandleLedger(limits: options.handleLimits ?? .defaults(descriptorLimit: Self.descriptorLimit()))
        self.snapshotState = snapshotState
    }

    /// The single gate every change passes through: each stage of ``pipeline`` acts before
    /// and after the change (see ``MutationPipeline``); a snapshot being taken holds the
    /// change back until it is done.
    @inline(__always) @discardableResult
    func mutate<T>(_ mutation: Mutation, _ change: (inout MutationNotes) throws(Errno) -> T) throws(Errno) -> T {
        try pipeline.run(mutation, in: self, change)
    }

    @inline(__always) @discardableResult
    func mutate<T>(_ mutation: Mutation, _ change: () throws(Errno) -> T) throws(Errno) -> T {
        try pipeline.run(mutation, in: self) { (_: inout MutationNotes) throws(Errno) -> T in try change() }
    }

    /// Attributes as the kernel sees them. `st_ino` stays the backing inode number, so it
    /// matches what readdir reports and what tools see in the backing directory.
    /// `modifiedAt`: the modification time the kernel just set on a file whose times it
    /// keeps (``kernelKeepsTimes(of:)``); the backing file's status is then read without its
    /// times (``FileStatus/withoutTimes(_:)``), and the reply gives this one for both.
    @inline(__always)
    func attributes(of inode: Inode, modifiedAt time: timespec? = nil) throws(Errno) -> stat {
        var st: stat
        if let time {
            st = try inode.withFD { (fd) throws(Errno) in try FileStatus.withoutTimes(fd) }
            st.st_mtim = time
            st.st_ctim = time
        } else {
            st = try backingAttributes(of: inode)
        }
        if inode.inSnapshotView { snapshotState.presentStore(BackingKey(st), &st) }
        inode.applyReportedInode(&st)
        if inode.cache.used.load(ordering: .relaxed) { try applyCachedAttributes(of: inode, to: &st) }
        return st
    }

    /// Attributes of the backing object itself (its real inode number).
    @inline(__always)
    func backingAttributes(of inode: Inode) throws(Errno) -> stat {
        try inode.withFD { (fd) throws(Errno) in try FileStatus.of(fd) }
    }
}
