import Glibc

/// The service manager's readiness protocol (systemd's `sd_notify`): under `Type=notify`
/// the manager names a datagram socket in `NOTIFY_SOCKET` (a path, or `@` for an abstract
/// name), and the daemon sends it `KEY=value` lines: `READY=1` once the mount can be used,
/// `STOPPING=1` when it is going away. Without `NOTIFY_SOCKET`, nothing is sent; a failure
/// to send is ignored (the manager then times out, as it would with a daemon that never
/// said it was ready).
enum ServiceNotification {
    static func send(_ state: String) {
        guard let value = getenv("NOTIFY_SOCKET") else { return }
        var name = Array(String(cString: value).utf8)
        guard let first = name.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "@") else { return }
        let abstract = first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs its terminating NUL (the zeroed address provides it); an abstract name does not.
        guard name.count + (abstract ? 0 : 1) <= capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var text = Array(state.utf8)
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                text.withUnsafeMutableBytes { bytes in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
    }
}
