import CLinux
/// A change the filesystem is about to make. Every mutating operation announces itself
/// through ``SnapFileSystem/mutate(_:_:)`` before touching the backing store — the one
/// place where the freeze gate, a write cache, a snapshot trigger or a copy-up hooks in.
public enum Mutation {
    /// A new name in `parent` (mknod, mkdir, symlink, link, create).
    case createEntry(parent: Inode, name: UnsafePointer<CChar>)
    /// A name removed from `parent` (unlink, rmdir).
    case removeEntry(parent: Inode, name: UnsafePointer<CChar>)
    /// A name moved between directories.
    case rename(from: Inode, name: UnsafePointer<CChar>, to: Inode, newName: UnsafePointer<CChar>)
    /// Mode, owner, size or times of `inode`.
    case setAttributes(inode: Inode)
    /// Data of `inode` in `offset ..< offset + length` (write, fallocate, copy_file_range target).
    case writeData(inode: Inode, offset: Int64, length: Int64)
    /// Extended attributes of `inode`.
    case extendedAttributes(inode: Inode)
    /// Opening `inode` with `O_TRUNC`.
    case truncateOnOpen(inode: Inode)

    /// The inode whose data or attributes change, if the change is to one inode.
    var changedInode: Inode? {
        switch self {
        case let .setAttributes(inode), let .writeData(inode, _, _), let .extendedAttributes(inode),
             let .truncateOnOpen(inode):
            return inode
        case .createEntry, .removeEntry, .rename:
            return nil
        }
    }
}

/// Sees every mutation before it happens and may refuse it by throwing an errno.
public protocol MutationObserver: Sendable {
    func willMutate(_ mutation: Mutation) throws
}
