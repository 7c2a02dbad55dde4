import Synchronization
import SnapFSSnapshots

/// What commit detection keeps per inode (``Inode/sqlite``).
struct SQLiteNodeState: ~Copyable, Sendable {
    /// What the inode is to SQLite commit detection (``SQLiteRole``), set from its name.
    let role = Atomic<UInt8>(0)
    /// A journal the kernel writes directly: the hot header it was last seen with
    /// (`1 << 32 | nonce`), or 0 (not seen hot since its last transaction ended).
    let journalHeader = Atomic<UInt64>(0)
    /// A rollback-mode database snapshotted by cloning: where it was written since its
    /// last commit snapshot (see ``WrittenRanges``); not kept for any other file.
    private let tracksWrites = Atomic<Bool>(false)
    private let written = Mutex(WrittenRanges())

    /// Notes a change of the data at `offset` (inside the freeze gate); one atomic load
    /// unless the inode is tracked.
    @inline(__always)
    func noteWrite(offset: Int64, length: Int64) {
        guard tracksWrites.load(ordering: .relaxed) else { return }
        written.withLock { $0.add(offset: offset, length: length) }
    }

    /// What was written since the last call (nil at the first, when nothing was tracked
    /// yet), and starts afresh: from now on the inode is tracked.
    func takeWrittenRanges() -> WrittenRanges? {
        let wasTracked = tracksWrites.exchange(true, ordering: .relaxed)
        let taken = written.withLock { (w: inout WrittenRanges) -> WrittenRanges in
            defer { w = WrittenRanges() }
            return w
        }
        return wasTracked ? taken : nil
    }
}
