import SnapFSBacking
import SystemPackage

/// Copy-up: a file a hard-link snapshot shares gets its own backing object before its
/// first change (see `SnapFileSystem+CopyUp`); after a rename, the inode now at each name
/// remembers it, so that a later copy-up replaces the right entry.
struct CopyUpStage: MutationStage {
    @inline(__always)
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        guard let inode = mutation.changedInode else { return }
        if case .truncateOnOpen = mutation {
            try fs.breakSharing(inode, keepingData: false)
        } else {
            try fs.breakSharing(inode, keepingData: true)
        }
    }

    func after(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) {
        guard case let .rename(from, name, to, newName, exchange) = mutation, fs.snapshotState.sharesBackingObjects else { return }
        fs.rememberName(newName, in: to)
        if exchange { fs.rememberName(name, in: from) }
    }
}
