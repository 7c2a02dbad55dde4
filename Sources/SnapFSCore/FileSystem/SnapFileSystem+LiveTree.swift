import SnapFSBacking
import SnapFSSnapshots

/// What the snapshot engine asks of the tree it snapshots.
extension SnapFileSystem: LiveTree {
    public func pushKernelDirtyPages(excluding: UInt64?) {
        guard let kernel = kernel.value else { return }
        kernel.pushDirtyPages(of: inodes.openForWriting().filter { $0 != excluding })
    }

    public func writeBack() throws(SnapshotFailure) {
        do throws(CacheWriteBackFailure) { try writeBackCache() } catch {
            throw SnapshotFailure(error.errno, error.message)
        }
    }

    public func snapshotAppeared(_ name: String, inStore store: BackingKey) {
        guard let kernel = kernel.value, let id = inodes.id(of: store, snapshotView: true) else { return }
        kernel.invalidateEntry(parent: id, name: name)
    }

    public func filesOpenForWriting(atLeast size: Int64) -> Set<UInt64> {
        var found = Set<UInt64>()
        for inode in inodes.openInodesForWriting() {
            guard let st = try? backingAttributes(of: inode), Int64(st.st_size) >= size else { continue }
            found.insert(UInt64(st.st_ino))
        }
        return found
    }

    public func statusLines() -> [String] {
        sqlite.statusLines() + cacheStatusLines() + descriptorStatusLines() + [requests.statusLine()]
    }
}
