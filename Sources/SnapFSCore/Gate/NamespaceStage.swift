import SnapFSSnapshots
import SystemPackage

/// Nothing changes on a read-only mount or under `.snapshots/`, and the reserved names at
/// the root stay what they are.
struct NamespaceStage: MutationStage {
    let readOnly: Bool

    @inline(__always)
    func prepare(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        if readOnly { throw Errno.readOnlyFileSystem }
        switch mutation {
        case let .createEntry(parent, name):
            if parent.inSnapshotView { throw Errno.readOnlyFileSystem }
            if parent.id == InodeTable.rootID && ReservedName.isReserved(name) { throw Errno.fileExists }
        case let .removeEntry(parent, name, _):
            if parent.inSnapshotView { throw Errno.readOnlyFileSystem }
            if parent.id == InodeTable.rootID && ReservedName.isReserved(name) { throw Errno.resourceBusy }
        case let .rename(from, name, to, newName, _):
            if from.inSnapshotView || to.inSnapshotView { throw Errno.readOnlyFileSystem }
            if (from.id == InodeTable.rootID && ReservedName.isReserved(name))
                || (to.id == InodeTable.rootID && ReservedName.isReserved(newName)) {
                throw Errno.resourceBusy
            }
        case .setAttributes, .write, .writeData, .extendedAttributes, .truncateOnOpen:
            if mutation.changedInode?.inSnapshotView == true { throw Errno.readOnlyFileSystem }
        }
    }
}
