import CLinux
import Glibc

/// Who made a request: the calling process's credentials as the kernel reports them.
public struct RequestContext: Sendable {
    public var uid: uid_t
    public var gid: gid_t
    public var pid: pid_t

    public init(uid: uid_t, gid: gid_t, pid: pid_t) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }

    /// The daemon itself (tests, internal operations).
    public static var daemon: RequestContext { RequestContext(uid: geteuid(), gid: getegid(), pid: getpid()) }
}
