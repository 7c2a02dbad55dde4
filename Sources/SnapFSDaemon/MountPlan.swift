import CLinux
import Glibc

/// The checks made before mounting, in the order a user would want them reported.
public struct MountPlan: Sendable, Equatable {
    /// Canonical absolute paths.
    public let backing: String
    public let mountpoint: String

    /// Validates `backing` and `mountpoint`. `mountTable` is the text of
    /// `/proc/self/mountinfo`; `fuseDevice` the path of the FUSE device.
    public static func validate(backing: String, mountpoint: String, allowNonEmpty: Bool,
                                mountTable: String? = nil,
                                fuseDevice: String = "/dev/fuse") throws(MountProblem) -> MountPlan {
        guard let backingStatus = status(backing) else { throw .backingMissing(backing) }
        guard backingStatus.st_mode & S_IFMT == S_IFDIR else { throw .backingNotDirectory(backing) }
        if isDeadMount(mountpoint) {
            let table = MountTable(mountTable ?? readMountTable())
            throw .deadMount(mountpoint, type: table.record(at: canonicalOfDead(mountpoint))?.fileSystemType)
        }
        guard let mountStatus = status(mountpoint) else { throw .mountpointMissing(mountpoint) }
        guard mountStatus.st_mode & S_IFMT == S_IFDIR else { throw .mountpointNotDirectory(mountpoint) }
        let realBacking = canonical(backing) ?? backing
        let realMountpoint = canonical(mountpoint) ?? mountpoint
        let table = mountTable ?? readMountTable()
        if MountTable(table).contains(mountpoint: realMountpoint) { throw .alreadyMounted(mountpoint) }
        if overlaps(realBacking, realMountpoint) {
            throw .overlapping(backing: realBacking, mountpoint: realMountpoint)
        }
        if let other = servingOverlap(realBacking, in: MountTable(table)) {
            throw .backingInUse(backing: backing, why: other.source == realBacking
                ? "mounted at \(other.mountpoint)" : "\(other.source), mounted at \(other.mountpoint), overlaps it")
        }
        if !allowNonEmpty && !isEmptyDirectory(realMountpoint) { throw .mountpointNotEmpty(mountpoint) }
        let fd = open(fuseDevice, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let reason = errno == ENOENT ? "\(fuseDevice) does not exist (is the fuse module loaded?)"
                : String(cString: strerror(errno))
            throw .fuseUnavailable(reason)
        }
        close(fd)
        return MountPlan(backing: realBacking, mountpoint: realMountpoint)
    }

    /// A live snapfs mount made by this user whose backing directory is `backing`, inside it
    /// or around it: a second daemon there would write into files that the first one's
    /// snapshots share, and neither would see the other's changes. (The exact directory,
    /// under any name, is also excluded by ``BackingLock``.) Mounts of other users are not
    /// counted: anyone may make a FUSE mount that calls itself snapfs.
    static func servingOverlap(_ backing: String, in table: MountTable) -> MountTable.Record? {
        let user = "user_id=\(geteuid())"
        return table.records.first { record in
            record.fileSystemType == "fuse.snapfs" && record.superOptions.split(separator: ",").contains { $0 == user }
                && overlaps(record.source, backing) && !isDeadMount(record.mountpoint)
        }
    }

    /// Whether `path` is a FUSE mount whose daemon is gone. statfs always reaches the
    /// daemon (stat may be answered from the kernel's attribute cache), and fails with
    /// ENOTCONN once the connection is dead.
    static func isDeadMount(_ path: String) -> Bool {
        var st = statvfs()
        return statvfs(path, &st) != 0 && errno == ENOTCONN
    }

    /// A dead mount's canonical path: realpath of its parent (the mount itself cannot be
    /// resolved), and its name.
    static func canonicalOfDead(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return (canonical(".") ?? ".") + "/" + trimmed }
        let parent = slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
        let name = trimmed[trimmed.index(after: slash)...]
        let real = canonical(parent) ?? parent
        return (real == "/" ? "" : real) + "/" + name
    }

    /// Whether one path is the other or lies inside it.
    public static func overlaps(_ a: String, _ b: String) -> Bool {
        a == b || a.hasPrefix(b == "/" ? "/" : b + "/") || b.hasPrefix(a == "/" ? "/" : a + "/")
    }

    static func status(_ path: String) -> stat? {
        var st = stat()
        return stat(path, &st) == 0 ? st : nil
    }

    public static func canonical(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func isEmptyDirectory(_ path: String) -> Bool {
        guard let dir = opendir(path) else { return false }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { return false }
        }
        return true
    }

    public static func readMountTable() -> String {
        guard let file = fopen("/proc/self/mountinfo", "r") else { return "" }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
