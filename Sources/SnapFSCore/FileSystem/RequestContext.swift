import CLinux
import Glibc

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
