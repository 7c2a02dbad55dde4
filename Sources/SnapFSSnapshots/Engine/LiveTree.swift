import SnapFSBacking
/// The live tree a snapshot is taken of, as the engine needs it: provided by the
/// filesystem that serves it, which attaches itself with ``SnapshotEngine/attach(_:)``.
public protocol LiveTree: AnyObject, Sendable {
    /// Makes the kernel hand over the pages it holds dirty for files open for writing and
    /// waits until they are written (they pass the freeze gate, so this runs before it
    /// closes). `excluding`: the node whose request the caller is serving.
    func pushKernelDirtyPages(excluding: UInt64?)
    /// Writes snapfs's own page cache back to the backing files (inside the closed gate).
    func writeBack() throws(SnapshotFailure)
    /// A snapshot named `name` appeared in the store, the directory `store` (the kernel
    /// may remember that the name did not exist).
    func snapshotAppeared(_ name: String, inStore store: BackingKey)
    /// Inode numbers of the regular files open for writing through the mount that are at
    /// least `size` bytes long (inside the closed gate, at a background build's epoch).
    func filesOpenForWriting(atLeast size: Int64) -> Set<UInt64>
    /// The live tree's own `status` lines (commit detection, cache, descriptors, requests).
    func statusLines() -> [String]
}
