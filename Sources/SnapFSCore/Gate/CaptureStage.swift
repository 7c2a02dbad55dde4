import CLinux
import Glibc
import SnapFSSnapshots
import SystemPackage

/// Copy-before-write for a tree snapshot being built in the background (``TreeCapture``):
/// before a change, what it is about to change is captured into the snapshot as it was at
/// the snapshot's moment, unless the build has taken it already. A directory whose entries
/// change is captured whole (its listing); any other object, by a clone into the stash.
/// Runs before copy-up, which would otherwise give the live name a new object first.
/// A capture never fails a change: a failed capture fails the snapshot.
struct CaptureStage: MutationStage {
    @inline(__always)
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        guard let capture = fs.snapshotState.activeCapture else { return }
        switch mutation {
        case let .createEntry(parent, _):
            directory(parent, capture)
        case let .removeEntry(parent, name, isDirectory):
            directory(parent, capture)
            // An empty directory the walk has not reached would be gone when it does.
            if isDirectory { child(name, of: parent, capture) }
        case let .rename(from, name, to, newName, _):
            directory(from, capture)
            if to !== from { directory(to, capture) }
            // The build finds a directory by its place until it is captured: one that moves
            // is captured first. One renamed over (empty) is removed; one exchanged moves.
            child(name, of: from, capture)
            child(newName, of: to, capture)
        case .setAttributes, .write, .writeData, .extendedAttributes, .truncateOnOpen:
            guard let inode = mutation.changedInode else { return }
            let change: TreeCapture.Change = switch mutation {
            case let .write(_, data, offset): .bytes(offset: offset, length: Int64(data.count))
            case let .writeData(_, offset, length): .bytes(offset: offset, length: length)
            case let .setAttributes(_, size?): .size(size)
            case .truncateOnOpen: .size(0)
            default: .metadata
            }
            _ = try? inode.withFD { (fd) throws(Errno) in
                if inode.isDirectory { capture.captureDirectory(fd) } else { capture.captureObject(fd, change) }
            }
        }
    }

    func after(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {
        guard case let .createEntry(parent, name) = mutation, let capture = fs.snapshotState.activeCapture else { return }
        _ = try? parent.withFD { (fd) throws(Errno) in capture.noteCreated(name, in: fd) }
    }

    private func directory(_ inode: Inode, _ capture: TreeCapture) {
        _ = try? inode.withFD { (fd) throws(Errno) in capture.captureDirectory(fd) }
    }

    private func child(_ name: UnsafePointer<CChar>, of parent: Inode, _ capture: TreeCapture) {
        _ = try? parent.withFD { (fd) throws(Errno) in
            let child = snapfs_openat(fd, name, SNAPFS_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
            guard child >= 0 else { return }
            defer { close(child) }
            capture.captureDirectory(child)
        }
    }
}
