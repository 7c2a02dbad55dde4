/// The daemon's way back into the kernel, provided by the FUSE layer.
public protocol KernelLink: AnyObject, Sendable {
    /// Makes the kernel hand over every page it holds dirty for the given inodes (shared
    /// mmap writes, or writes buffered by kernel write-back caching) and waits until the
    /// daemon has written them. Must not be called with the freeze gate closed (that
    /// write-back passes the gate), nor for an inode whose request the caller is serving.
    func pushDirtyPages(of inodes: [UInt64])
    /// Tells the kernel that `name` in directory `parent` changed behind its back.
    func invalidateEntry(parent: UInt64, name: String)
    /// Tells the kernel that the attributes of `inode` changed behind its back (a write
    /// cleared its set-ID bits). Safe inside a request for the same inode: only the
    /// attributes are dropped, no page lock is taken.
    func invalidateAttributes(of inode: UInt64)
}
