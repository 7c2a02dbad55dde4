/// How `TreeCloner` recreates regular files; everything else (directories, symlinks,
/// devices, FIFOs, sockets) is always recreated with its metadata.
public enum CloneMethod: String, Sendable {
    /// `linkat` of the source file: the clone shares the source's inode.
    case hardlink
    /// A new inode whose extents are shared with the source (`ioctl(FICLONE)`); fails with
    /// the filesystem's errno where reflinks are unsupported, never falls back to copying.
    case reflink
    /// A new inode with the content copied (`copy_file_range`), holes kept.
    case copy
}
