import CLinux
import Glibc
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

    private struct State {
        var byID: [UInt64: Node] = [:]
        var byKey: [BackingKey: UInt64] = [:]
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
            state.byKey[root.key] = Self.rootID
        }
        pool?.owner.table = self
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
    public func reference(fd: Int32, status st: stat) -> Inode {
        let key = BackingKey(st)
        let pool = self.pool.flatMap { $0.device == key.device ? $0 : nil }
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
            let inode = Inode(id: id, fd: fd, key: key, fileType: st.fileType, pool: pool)
            state.byID[id] = Node(inode: inode, lookups: 1)
            state.byKey[key] = id
            return (inode, nil)
        }
        switch outcome {
        case .alreadyOpen?:
            close(fd)
        case .adopted?:
            // The inode took `fd` over and counted it; the pool may be over budget now.
            if let pool, pool.open > pool.budget { pool.sweep() }
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
            if state.byKey[node.inode.key] == id { state.byKey[node.inode.key] = nil }
            return node.inode
        }
        _ = released
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
