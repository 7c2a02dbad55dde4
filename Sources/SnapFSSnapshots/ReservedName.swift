import Glibc

/// Names at the root of the mount that snapfs owns: the snapshot directory and the
/// control file. They cannot be created, removed or renamed through the mount.
public enum ReservedName {
    public static let snapshots = ".snapshots"
    public static let control = ".snapfs-control"

    @inline(__always)
    package static func isSnapshots(_ name: UnsafePointer<CChar>) -> Bool { strcmp(name, snapshots) == 0 }

    @inline(__always)
    package static func isControl(_ name: UnsafePointer<CChar>) -> Bool { strcmp(name, control) == 0 }

    @inline(__always)
    package static func isReserved(_ name: UnsafePointer<CChar>) -> Bool {
        // Both start with '.'; most names do not.
        name[0] == 0x2E && (isSnapshots(name) || isControl(name))
    }
}
