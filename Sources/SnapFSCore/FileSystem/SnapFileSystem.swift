import CLinux
import Glibc
import Logging
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
    let observer: (any MutationObserver)?
    /// Whether the daemon may give files away (it runs as root).
    let canChown: Bool

    /// Opens the backing directory at `backingPath`.
    public init(backingPath: String, options: FileSystemOptions = FileSystemOptions(),
                observer: (any MutationObserver)? = nil,
                logger: Logger = Logger(label: "snapfs"),
                descriptorBudget: Int? = nil) throws(Errno) {
        let rootFD = try syscall(snapfs_openat(AT_FDCWD, backingPath, SNAPFS_O_PATH | O_DIRECTORY | O_CLOEXEC, 0))
        do throws(Errno) {
            self.inodes = try InodeTable(rootFD: rootFD, descriptorBudget: descriptorBudget)
        } catch {
            close(rootFD)
            throw error
        }
        self.proc = try ProcSelfFD()
        self.options = options
        self.observer = observer
        self.logger = logger
        self.canChown = geteuid() == 0
    }

    /// The single gate every change passes through: refuses changes to a read-only mount and
    /// lets the observer (cache, trigger, copy-up) act before the backing store is touched.
    @inline(__always) @discardableResult
    func mutate<T>(_ mutation: @autoclosure () -> Mutation, _ body: () throws(Errno) -> T) throws(Errno) -> T {
        if options.readOnly { throw Errno.readOnlyFileSystem }
        if let observer {
            do {
                try observer.willMutate(mutation())
            } catch let error as Errno {
                throw error
            } catch {
                logger.error("mutation refused: \(error)")
                throw Errno.ioError
            }
        }
        return try body()
    }

    /// Attributes as the kernel sees them. `st_ino` stays the backing inode number, so it
    /// matches what readdir reports and what tools see in the backing directory.
    @inline(__always)
    func attributes(of inode: Inode) throws(Errno) -> stat {
        try inode.withFD { (fd) throws(Errno) in try FileStatus.of(fd) }
    }
}
