import SystemPackage

/// The ``MutationObserver`` the filesystem was made with: it may refuse a change.
struct ObserverStage: MutationStage {
    let observer: any MutationObserver

    func before(_ mutation: Mutation, _ notes: inout MutationNotes, in fs: SnapFileSystem) throws(Errno) {
        do {
            try observer.willMutate(mutation)
        } catch let error as Errno {
            throw error
        } catch {
            fs.logger.error("mutation refused: \(error)")
            throw Errno.ioError
        }
    }
}
