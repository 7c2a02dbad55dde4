import CLinux
import Glibc
import SystemPackage

/// A place in a directory tree that holds one descriptor however deep it is: the way every
/// walk of a tree that users can change (diff, restore, removal, deep snapshot building)
/// moves through it.
///
/// Going down opens a child with `O_NOFOLLOW | O_DIRECTORY` relative to the current
/// directory, so a symlink is never followed. Going up opens `..` and checks that it is the
/// directory the walk came from (device and inode); if a user has moved the directory
/// meanwhile, the walk stops with `ESTALE` rather than go on somewhere else. Memory grows
/// with depth (an identity per level), descriptors and stack frames do not.
public final class DirectoryCursor {
    /// Device and inode: what a directory is, whatever its name.
    public struct Identity: Hashable, Sendable {
        public let device: UInt64
        public let inode: UInt64

        public init(_ status: stat) {
            device = UInt64(status.st_dev)
            inode = UInt64(status.st_ino)
        }
    }

    /// The current directory, open `O_RDONLY`.
    public private(set) var fd: Int32 = -1
    /// The current directory's `fstat`.
    public private(set) var status = stat()
    /// The directories above the current one, the walk's root first.
    private var above: [Identity] = []
    private let extraFlags: Int32

    /// How many levels below its root the cursor is.
    public var depth: Int { above.count }

    /// A cursor at the directory `directory` (a descriptor that stays the caller's), or at
    /// `name` inside it when given. `extraFlags` (such as `O_NOATIME`) go to every open.
    public init(at directory: Int32, _ name: [UInt8] = Array(".".utf8), extraFlags: Int32 = 0) throws(Errno) {
        self.extraFlags = extraFlags
        fd = try Self.openDirectory(directory, name, extraFlags)
        var st = stat()
        if fstat(fd, &st) != 0 {
            let error = Errno.current
            Glibc.close(fd)
            fd = -1
            throw error
        }
        status = st
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }

    /// Moves into the subdirectory `name`. Throws ENOTDIR or ELOOP if it is not a directory
    /// (a symlink included), ENOENT if it is gone; the cursor stays where it was then.
    public func descend(_ name: [UInt8]) throws(Errno) {
        let child = try Self.openDirectory(fd, name, extraFlags)
        var st = stat()
        if fstat(child, &st) != 0 {
            let error = Errno.current
            Glibc.close(child)
            throw error
        }
        above.append(Identity(status))
        Glibc.close(fd)
        fd = child
        status = st
    }

    /// Moves back to the directory above. Throws ESTALE if `..` is no longer the directory the
    /// walk came down from (the current one was moved), EINVAL at the root of the walk.
    public func ascend() throws(Errno) {
        guard let expected = above.last else { throw .invalidArgument }
        let parent = try Self.openDirectory(fd, Array("..".utf8), extraFlags)
        var st = stat()
        if fstat(parent, &st) != 0 || Identity(st) != expected {
            Glibc.close(parent)
            throw .staleNFSFileHandle
        }
        above.removeLast()
        Glibc.close(fd)
        fd = parent
        status = st
    }

    /// Walks every directory below the current one, depth first, and the current one:
    /// `enter` runs with the cursor in a directory and returns the names of the
    /// subdirectories to go into; `leave` runs when everything below it is done. The
    /// cursor ends where it started.
    public func walk(enter: (DirectoryCursor) throws(Errno) -> [[UInt8]],
                     leave: (DirectoryCursor) throws(Errno) -> Void = { _ in }) throws(Errno) {
        var levels = [try enter(self)]
        while !levels.isEmpty {
            if let child = levels[levels.count - 1].popLast() {
                try descend(child)
                levels.append(try enter(self))
                continue
            }
            levels.removeLast()
            try leave(self)
            if !levels.isEmpty { try ascend() }
        }
    }

    /// Refreshes `status` (after changing the directory's metadata).
    public func refreshStatus() throws(Errno) {
        var st = stat()
        if fstat(fd, &st) != 0 { throw .current }
        status = st
    }

    static func openDirectory(_ directory: Int32, _ name: [UInt8], _ extraFlags: Int32) throws(Errno) -> Int32 {
        let fd = name.withCString {
            snapfs_openat(directory, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | extraFlags, 0)
        }
        if fd < 0 { throw .current }
        return fd
    }
}
