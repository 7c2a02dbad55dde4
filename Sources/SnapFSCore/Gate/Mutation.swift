import CLinux

/// A change the filesystem is about to make. Every mutating operation announces itself
/// through ``SnapFileSystem/mutate(_:_:)`` before touching the backing store: the one gate
/// where each feature's stage (``MutationStage``) acts before and after the change.
public enum Mutation {
    /// A new name in `parent` (mknod, mkdir, symlink, link, create).
    case createEntry(parent: Inode, name: UnsafePointer<CChar>)
    /// A name removed from `parent`: a directory (rmdir) or anything else (unlink).
    case removeEntry(parent: Inode, name: UnsafePointer<CChar>, directory: Bool)
    /// A name moved between directories (`exchange`: the two names swapped).
    case rename(from: Inode, name: UnsafePointer<CChar>, to: Inode, newName: UnsafePointer<CChar>, exchange: Bool)
    /// Mode, owner, size (`size`, when truncated or extended) or times of `inode`.
    case setAttributes(inode: Inode, size: Int64?)
    /// `data` written at `offset` through `file` (write).
    case write(file: OpenFile, data: UnsafeRawBufferPointer, offset: Int64)
    /// Data of `inode` in `offset ..< offset + length` changed otherwise (fallocate,
    /// copy_file_range target).
    case writeData(inode: Inode, offset: Int64, length: Int64)
    /// Extended attributes of `inode`.
    case extendedAttributes(inode: Inode)
    /// Opening `inode` with `O_TRUNC`.
    case truncateOnOpen(inode: Inode)

    /// The inode whose data or attributes change, if the change is to one inode.
    var changedInode: Inode? {
        switch self {
        case let .setAttributes(inode, _), let .writeData(inode, _, _), let .extendedAttributes(inode),
             let .truncateOnOpen(inode):
            return inode
        case let .write(file, _, _):
            return file.inode
        case .createEntry, .removeEntry, .rename:
            return nil
        }
    }

    /// The data range changed, for a change of a file's data.
    var changedRange: (inode: Inode, offset: Int64, length: Int64)? {
        switch self {
        case let .write(file, data, offset): return (file.inode, offset, Int64(data.count))
        case let .writeData(inode, offset, length): return (inode, offset, length)
        default: return nil
        }
    }
}

/// Sees every mutation before it happens and may refuse it by throwing an errno.
public protocol MutationObserver: Sendable {
    func willMutate(_ mutation: Mutation) throws
}
