import CLinux
import Glibc

/// The daemon's descriptors: how many it may have, how many it has, and who holds them.
extension SnapFileSystem {
    /// The process's descriptor limit (its soft RLIMIT_NOFILE, which the daemon raises to
    /// the most the system allows at start).
    public static func descriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, 1 << 30))
    }

    /// Descriptors open in the process now (entries of /proc/self/fd).
    static func descriptorsInUse() -> Int? {
        guard let dir = Glibc.opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = Glibc.readdir(dir) {
            if entry.pointee.d_name.0 != 0x2E { count += 1 }
        }
        return count - 1   // the listing's own
    }

    /// The `status` lines about descriptors: in use and the limit; open files and
    /// directories held for users, the user holding the most, and the bound per user.
    public func descriptorStatusLines() -> [String] {
        let inUse = Self.descriptorsInUse().map(String.init) ?? "?"
        let (total, top) = handles.usage()
        var lines = [
            "descriptors: \(inUse) of \(Self.descriptorLimit())",
            "open-handles: \(total)",
        ]
        if let top { lines.append("open-handles-top-user: uid \(top.uid) holds \(top.count)") }
        lines.append("open-limit-per-user: \(handles.limits.files) files, \(handles.limits.directories) directories")
        return lines
    }
}
