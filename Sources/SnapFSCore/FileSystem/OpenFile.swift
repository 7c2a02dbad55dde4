import CLinux
import Glibc

/// A file opened through the mount: the backing descriptor and the inode it belongs to.
/// The FUSE layer keeps it alive from open/create to release.
public final class OpenFile: Sendable {
    public let inode: Inode
    /// Read/write descriptor of the backing file.
    public let fd: Int32
    public let flags: Int32
    /// Its writes go to the backing file, not into the page cache (unless the file has
    /// dirty data there already), and its close does not reach the daemon: a file just
    /// created through the mount (see `SnapFileSystem.writesThroughWhenCreated`).
    public let writesThrough: Bool
    /// How the kernel serves it (see `Passthrough.swift`).
    public let passthrough: PassthroughMode
    /// Its I/O bypasses the kernel's page cache (direct I/O), as every open file of the
    /// inode does (see `SnapFileSystem.writesBypassKernelCache`).
    public let kernelDirect: Bool
    /// The kernel must drop the inode's cached pages at this open (they may predate
    /// writes made with direct I/O).
    public let dropsKernelPages: Bool
    /// Called when the last open file of a passthrough inode goes.
    private let passthroughEnded: (@Sendable (Inode, Inode.PassthroughState) -> Void)?
    /// The open counted against its user's bound (see ``HandleLedger``), given back with it.
    private let charge: HandleCharge?

    init(inode: Inode, fd: Int32, flags: Int32, writesThrough: Bool = false,
         offer: (() -> Int32?)? = nil, direct: (() -> Bool)? = nil,
         passthroughEnded: (@Sendable (Inode, Inode.PassthroughState) -> Void)? = nil,
         charge: HandleCharge? = nil) {
        self.inode = inode
        self.fd = fd
        self.flags = flags
        let (mode, kernelDirect, drops) = inode.opened(fd: fd, flags: flags, offer: offer, direct: direct)
        self.passthrough = mode
        self.kernelDirect = kernelDirect
        self.dropsKernelPages = drops
        // In passthrough mode, writes must be in the backing file when they return.
        self.writesThrough = writesThrough || mode != .none
        self.passthroughEnded = passthroughEnded
        self.charge = charge
        inode.relieveDescriptorPressure()
    }

    /// Its data must not go into the page cache (the kernel reads the backing file directly).
    var bypassesCache: Bool { passthrough != .none }

    /// The kernel writes it to the backing file itself (a SQLite journal, see
    /// `SnapFileSystem+JournalPassthrough`).
    var kernelWrites: Bool {
        if case .reads = passthrough { return flags & O_ACCMODE != O_RDONLY }
        return false
    }

    deinit {
        if let ended = inode.closeOpenFile(fd: fd, passthrough: passthrough != .none) {
            passthroughEnded?(inode, ended)
        }
    }
}
