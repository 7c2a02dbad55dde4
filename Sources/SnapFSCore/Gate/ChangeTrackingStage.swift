import SystemPackage

/// The next snapshot has something to take; a database cloned by range notes where it was
/// written (``Inode/noteWrite(offset:length:)``).
struct ChangeTrackingStage: MutationStage {
    @inline(__always)
    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        fs.snapshotState.noteChange()
        if let (inode, offset, length) = mutation.changedRange { inode.sqlite.noteWrite(offset: offset, length: length) }
    }
}
