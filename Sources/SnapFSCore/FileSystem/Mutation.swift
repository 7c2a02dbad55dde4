import CLinux
/// A change the filesystem is about to make. Every mutating operation announces itself
/// through ``SnapFileSystem/mutate(_:_:)`` before touching the backing store — the one
/// place where a write cache, a snapshot trigger or a copy-up hooks in.
public enum Mutation: Sendable {
    /// A new name in `parent` (mknod, mkdir, symlink, link, create).
    case createEntry(parent: UInt64)
    /// A name removed from `parent` (unlink, rmdir).
    case removeEntry(parent: UInt64)
    /// A name moved between directories.
    case rename(from: UInt64, to: UInt64)
    /// Mode, owner, size or times of `inode`.
    case setAttributes(inode: UInt64)
    /// Data of `inode` in `offset ..< offset + length` (write, fallocate, copy_file_range target).
    case writeData(inode: UInt64, offset: Int64, length: Int64)
    /// Extended attributes of `inode`.
    case extendedAttributes(inode: UInt64)
    /// Opening `inode` with `O_TRUNC`.
    case truncateOnOpen(inode: UInt64)
}

/// Sees every mutation before it happens and may refuse it by throwing an errno.
public protocol MutationObserver: Sendable {
    func willMutate(_ mutation: Mutation) throws
}
