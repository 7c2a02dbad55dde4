import CLinux
import Glibc
import SnapFSBacking

/// Who made a request: the calling process's credentials as the kernel reports them.
public struct RequestContext: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public var pid: pid_t
    /// The caller's umask, for new files (the kernel leaves it to snapfs when it
    /// negotiates POSIX ACLs: a directory's default ACL replaces the umask).
    public var umask: mode_t

    public init(uid: uid_t, gid: gid_t, pid: pid_t, umask: mode_t = 0o022) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.umask = umask
    }

    /// The daemon itself (tests, internal operations).
    public static var daemon: RequestContext { RequestContext(uid: geteuid(), gid: getegid(), pid: getpid(), umask: 0) }

    /// Whether the caller is a member of `group`: its own gid, or one of the
    /// supplementary groups of its process (read from /proc, only when needed).
    public func isMember(of group: gid_t) -> Bool {
        if group == gid { return true }
        return Self.supplementaryGroups(of: pid).contains(group)
    }

    /// Whether the caller holds CAP_FSETID (keeps set-ID bits when it writes), as the
    /// `CapEff:` line of its /proc status says. Without a readable status (no pid: a
    /// write-back from the kernel, or a caller in another pid namespace), root is taken
    /// to hold it and everyone else not. Read only for files that have a set-ID bit.
    public var holdsFileSetID: Bool {
        guard pid > 0, let bytes = readWholeFile("/proc/\(pid)/status"),
              let capabilities = Self.effectiveCapabilities(inStatus: String(decoding: bytes, as: UTF8.self)) else {
            return uid == 0
        }
        return capabilities & (1 << 4) != 0   // CAP_FSETID
    }

    /// The `CapEff:` mask of a /proc/PID/status text.
    static func effectiveCapabilities(inStatus text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix("CapEff:") {
            return UInt64(line.dropFirst("CapEff:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" }), radix: 16)
        }
        return nil
    }

    static func supplementaryGroups(of pid: pid_t) -> [gid_t] {
        guard let bytes = readWholeFile("/proc/\(pid)/status") else { return [] }
        return groups(inStatus: String(decoding: bytes, as: UTF8.self))
    }

    /// The `Groups:` line of a /proc/PID/status text.
    static func groups(inStatus text: String) -> [gid_t] {
        for line in text.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { gid_t($0) }
        }
        return []
    }
}
