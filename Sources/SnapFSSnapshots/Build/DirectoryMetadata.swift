import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// What a snapshot keeps of a directory besides its entries: owner, group, mode (setgid
/// and sticky included), extended attributes (POSIX ACLs among them) and times, read from
/// one open directory and applied to another, both by descriptor.
///
/// A per-database snapshot recreates the directories on the database's path with it, so
/// that the snapshot gives nobody access that the live directories did not give.
struct DirectoryMetadata {
    let status: stat
    let attributes: [(name: [CChar], value: [UInt8])]

    /// The metadata of the open directory `fd`.
    init(of fd: Int32, buffers: ExtendedAttributes) throws(Errno) {
        var status = stat()
        try syscall(fstat(fd, &status))
        self.status = status
        attributes = try buffers.read(.descriptor(fd))
    }

    /// Owner, then xattrs, then mode (chown clears setuid/setgid; an ACL rewrites the group
    /// bits), then times: the order ``CloneDirectory`` applies them in. `fd` is a directory
    /// this process has just made with mode `made` and nothing inherited, so what it already
    /// has is not set again (this runs at every commit).
    func apply(to fd: Int32, made: mode_t) throws(Errno) {
        if status.st_uid != geteuid() || status.st_gid != getegid() {
            try syscall(fchown(fd, status.st_uid, status.st_gid))
        }
        try ExtendedAttributes.write(attributes, to: .descriptor(fd))
        if status.st_mode & 0o7777 != made || !attributes.isEmpty {
            try syscall(fchmod(fd, status.st_mode & 0o7777))
        }
        var times = (status.st_atim, status.st_mtim)
        _ = try withUnsafePointer(to: &times) { (times) throws(Errno) in
            try syscall(futimens(fd, UnsafeRawPointer(times).assumingMemoryBound(to: timespec.self)))
        }
    }
}
