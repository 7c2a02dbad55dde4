import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// The inodes the kernel currently holds references to, by node id and by backing identity.
///
/// Every `lookup`-like reply adds one kernel reference; `forget` removes them. An inode
/// leaves the table (and its descriptor is closed) when the kernel holds none.
public final class InodeTable: Sendable {
    public static let rootID: UInt64 = 1

    private struct Node {
        let inode: Inode
        var lookups: UInt64
    }

    /// The live tree and `.snapshots/` never share a kernel inode, even where a hard-link
    /// snapshot shares the backing object: a write through one must not show through the other.
    /// Nor do `.snapshots/` and its view by second `.snapshots/.gmt/` (the same snapshot
    /// directories under other names): a directory with two parents would be a hard-linked
    /// directory to the kernel.
    private struct TableKey: Hashable {
        let backing: BackingKey
        let snapshotView: Bool
        var previousVersions = false
    }

    private struct State {
        var byID: [UInt64: Node] = [:]
        var byKey: [TableKey: UInt64] = [:]
        var nextID: UInt64 = InodeTable.rootID + 1
    }

    private let state = Mutex(State())
    public let root: Inode
    /// Closes and reopens descriptors so the kernel can hold more inodes than the process
    /// may have descriptors; nil where that is impossible.
    let pool: DescriptorPool?

    /// Takes ownership of `rootFD`, an `SNAPFS_O_PATH` descriptor of the backing directory.
    /// `descriptorBudget`: how many descriptors inodes may keep open (default: from the
    /// process's limit).
    public init(rootFD: Int32, descriptorBudget: Int? = nil) throws(Errno) {
        let st = try FileStatus.of(rootFD)
        root = Inode(id: Self.rootID, fd: rootFD, key: BackingKey(st), fileType: st.fileType)
        pool = DescriptorPool.make(rootFD: rootFD, rootKey: root.key, budget: descriptorBudget)
        let root = self.root
        state.withLock { state in
            // The kernel never forgets the root; one permanent reference keeps it.
            state.byID[Self.rootID] = Node(inode: root, lookups: 1)
            state.byKey[TableKey(backing: root.key, snapshotView: false)] = Self.rootID
        }
        pool?.attach(to: self)
    }

    /// The inode for a node id the kernel sent.
    @inline(__always)
    public func inode(_ id: UInt64) throws(Errno) -> Inode {
        if id == Self.rootID { return root }
        guard let inode = state.withLock({ $0.byID[id]?.inode }) else { throw Errno(rawValue: ESTALE) }
        return inode
    }

    /// Adds one kernel reference to the inode of `fd`'s backing object, creating the
    /// inode if the kernel does not hold it yet. Takes ownership of `fd` either way.
    /// `snapshotView`: the object was reached under `.snapshots/`; `previousVersions`: under
    /// `.snapshots/.gmt/` (implies `snapshotView`). `privateGeneration`: for a
    /// new inode, the snapshot generation up to which its object is known not to be shared.
    public func reference(fd: Int32, status st: stat, snapshotView: Bool = false, previousVersions: Bool = false,
                          privateGeneration: @autoclosure () -> UInt64 = 0) -> Inode {
        let backing = BackingKey(st)
        let key = TableKey(backing: backing, snapshotView: snapshotView || previousVersions,
                           previousVersions: previousVersions)
        let pool = self.pool.flatMap { $0.device == backing.device ? $0 : nil }
        let (inode, outcome) = state.withLock { state -> (Inode, Inode.Claim?) in
            if let id = state.byKey[key], var node = state.byID[id] {
                // Lock order: table, then inode (a sweep locks inodes without the table).
                let claim = node.inode.claim(fd)
                if claim != .stale {
                    node.lookups += 1
                    state.byID[id] = node
                    return (node.inode, claim)
                }
                // A new object reuses the number of a deleted one the kernel still holds:
                // the old inode keeps its id until forgotten, the key now means the new one.
            }
            let id = state.nextID
            state.nextID += 1
            let inode = Inode(id: id, fd: fd, key: backing, fileType: st.fileType, pool: pool,
                              inSnapshotView: snapshotView, inPreviousVersions: previousVersions,
                              privateGeneration: privateGeneration())
            state.byID[id] = Node(inode: inode, lookups: 1)
            state.byKey[key] = id
            return (inode, nil)
        }
        switch outcome {
        case .alreadyOpen?:
            close(fd)
        case .adopted?:
            // The inode took `fd` over and counted it; the pool may be over budget now.
            if let pool, pool.isOverBudget { pool.sweep() }
        case .stale?, nil:
            if let pool, pool.opened() { pool.sweep() }
        }
        return inode
    }

    /// Adds one kernel reference to an inode already in the table (a hard link's new name).
    public func reference(_ inode: Inode) {
        state.withLock { state in
            state.byID[inode.id]?.lookups += 1
        }
    }

    /// Drops `count` kernel references.
    public func forget(_ id: UInt64, count: UInt64) {
        if id == Self.rootID { return }
        // The inode's descriptor closes when the last Swift reference goes, outside the lock.
        let released: Inode? = state.withLock { state in
            guard var node = state.byID[id] else { return nil }
            if node.lookups > count {
                node.lookups -= count
                state.byID[id] = node
                return nil
            }
            state.byID[id] = nil
            let key = TableKey(backing: node.inode.key, snapshotView: node.inode.inSnapshotView,
                               previousVersions: node.inode.inPreviousVersions)
            if state.byKey[key] == id { state.byKey[key] = nil }
            return node.inode
        }
        _ = released
    }

    /// After a copy-up moved `inode` from the object `old` to a new one.
    func rekey(_ inode: Inode, from old: BackingKey) {
        let new = inode.key
        state.withLock { state in
            let oldKey = TableKey(backing: old, snapshotView: inode.inSnapshotView,
                                  previousVersions: inode.inPreviousVersions)
            if state.byKey[oldKey] == inode.id { state.byKey[oldKey] = nil }
            state.byKey[TableKey(backing: new, snapshotView: inode.inSnapshotView,
                                 previousVersions: inode.inPreviousVersions)] = inode.id
        }
    }

    /// The node id the kernel holds for a backing object, if any.
    public func id(of key: BackingKey, snapshotView: Bool) -> UInt64? {
        state.withLock { $0.byKey[TableKey(backing: key, snapshotView: snapshotView)] }
    }

    /// The regular files open for writing now: the only ones the kernel can hold dirty pages of
    /// (a shared mapping keeps its file open).
    public func openForWriting() -> [UInt64] {
        openInodesForWriting().map(\.id)
    }

    /// The regular files open for writing.
    func openInodesForWriting() -> [Inode] {
        allInodes().filter { $0.isRegularFile && $0.isOpenForWriting }
    }

    /// Every inode the kernel holds, for a sweep of the descriptor pool.
    func allInodes() -> [Inode] {
        state.withLock { $0.byID.values.map(\.inode) }
    }

    /// Number of inodes the kernel holds (root included).
    public var count: Int { state.withLock { $0.byID.count } }

    /// The kernel references held on `id`, or nil if the kernel holds none.
    public func lookups(_ id: UInt64) -> UInt64? { state.withLock { $0.byID[id]?.lookups } }
}
