import Glibc
import SnapFSBacking
import Synchronization

/// What the filesystem's change path shares with the snapshot engine: the freeze gate,
/// whether anything changed since the newest snapshot, and the copy-up generation.
///
/// Copy-up bookkeeping: `generation` grows by one with every snapshot that shares backing
/// objects with the live tree (hard links). An inode whose ``Inode/privateGeneration`` is
/// below it may share its object with a snapshot and is copied up before its first change.
public final class SnapshotState: Sendable {
    public let gate = FreezeGate()
    let generation = Atomic<UInt64>(1)
    let changedSinceSnapshot = Atomic<Bool>(true)
    /// Whether any snapshot may share backing objects with the live tree (a hard-link
    /// snapshot exists or will be made); without, copy-up is never needed.
    let sharesObjects = Atomic<Bool>(false)
    /// Serialises copy-ups (rare: the first change of a file after a snapshot), so two
    /// writers of one file do not both copy it. Lock order: gate, then this, then inodes.
    package let copyUpLock = Mutex<Void>(())
    /// Backing objects the kernel reads directly (FUSE passthrough, see ``KernelPassthrough``):
    /// a hard-link snapshot copies them instead of linking, so that they never need a
    /// copy-up, which the kernel's open files of them would not follow. Added inside the gate
    /// (a snapshot being built sees no new one), removed when the last such open file goes.
    package let passthroughObjects = Mutex<Set<BackingKey>>([])
    /// `BACKING/.snapshots` once the engine has opened it: private to root there, shown
    /// through the mount with ``storeViewMode`` so that users can browse the snapshots.
    let store = Mutex<BackingKey?>(nil)

    /// The permission bits `MOUNT/.snapshots` shows: anyone may list and enter it (and
    /// each snapshot's own modes decide what lies beyond); nobody may write.
    public static let storeViewMode: mode_t = 0o555

    /// The tree snapshot being built in the background, if any (see ``TreeCapture``): each
    /// change captures what it is about to change first. `capturing` is the cheap check.
    let capture = Mutex<TreeCapture?>(nil)
    let capturing = Atomic<Bool>(false)

    /// The tree snapshots by second, for `MOUNT/.snapshots/.gmt` (see ``PreviousVersions``).
    package let previousVersions = PreviousVersionsIndex()

    public init() {}

    /// The capture in progress, for the change path (inside the gate).
    @inline(__always)
    package var activeCapture: TreeCapture? {
        capturing.load(ordering: .acquiring) ? capture.withLock { $0 } : nil
    }

    func install(_ tree: TreeCapture?) {
        capture.withLock { $0 = tree }
        capturing.store(tree != nil, ordering: .releasing)
    }

    /// Notes a change (called inside the gate).
    @inline(__always)
    package func noteChange() {
        if !changedSinceSnapshot.load(ordering: .relaxed) { changedSinceSnapshot.store(true, ordering: .relaxed) }
    }

    public var changed: Bool { changedSinceSnapshot.load(ordering: .relaxed) }
    public var sharesBackingObjects: Bool { sharesObjects.load(ordering: .relaxed) }
    public var currentGeneration: UInt64 { generation.load(ordering: .acquiring) }

    /// Whether `key` is `BACKING/.snapshots` (`MOUNT/.snapshots` and its `.gmt` view).
    @inline(__always)
    package func isStore(_ key: BackingKey) -> Bool { store.withLock { $0 == key } }

    /// Shows the snapshot store's directory as ``storeViewMode`` (`st` is of `key`, an
    /// object under `.snapshots`).
    @inline(__always)
    package func presentStore(_ key: BackingKey, _ st: inout stat) {
        guard st.st_mode & S_IFMT == S_IFDIR, store.withLock({ $0 == key }) else { return }
        st.st_mode = (st.st_mode & ~0o7777) | Self.storeViewMode
    }
}
