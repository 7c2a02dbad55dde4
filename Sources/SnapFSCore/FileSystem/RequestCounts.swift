import Synchronization

/// How many requests of each kind the kernel sent the daemon since the mount, shown in
/// `snapfs status` as one `requests: total=N lookup=N …` line.
///
/// A request is a round trip between the application and the daemon, and on a virtual
/// machine each costs tens of microseconds: the number of requests an operation needs is
/// what bounds small I/O through any FUSE filesystem. The benchmark reads these counters
/// before and after each workload to report requests per operation.
///
/// The FUSE layer counts each request as it reads it from the kernel (from `/dev/fuse`
/// or an io_uring queue), by the opcode in its header, before anything decodes it: every
/// request is counted once, including those answered without the core (FORGET, INTERRUPT,
/// the control file, requests libfuse refuses). One relaxed atomic add per request: next to
/// a round trip it costs nothing measurable.
public final class RequestCounts: Sendable {
    /// The kernel's FUSE opcodes (`include/uapi/linux/fuse.h`) and the names status gives
    /// them; a gap in the numbering, or an opcode past the table, counts as `other`.
    static let names: [String?] = [
        nil, "lookup", "forget", "getattr", "setattr", "readlink", "symlink", nil, "mknod", "mkdir",
        "unlink", "rmdir", "rename", "link", "open", "read", "write", "statfs", "release", nil,
        "fsync", "setxattr", "getxattr", "listxattr", "removexattr", "flush", "init", "opendir", "readdir", "releasedir",
        "fsyncdir", "getlk", "setlk", "setlkw", "access", "create", "interrupt", "bmap", "destroy", "ioctl",
        "poll", "notify_reply", "batch_forget", "fallocate", "readdirplus", "rename2", "lseek", "copy_file_range",
        "setupmapping", "removemapping", "syncfs", "tmpfile", "statx",
    ]
    private static let slots = 64
    /// Slot `other`: opcodes with no name above.
    private static let otherSlot = slots - 1

    private let counts: InlineArray<64, Atomic<UInt64>>

    public init() {
        counts = InlineArray { _ in Atomic(0) }
    }

    /// Counts one request with FUSE opcode `opcode`.
    @inline(__always)
    public func count(opcode: UInt32) {
        let slot = Int(opcode) < Self.names.count && Self.names[Int(opcode)] != nil ? Int(opcode) : Self.otherSlot
        counts[slot].wrappingAdd(1, ordering: .relaxed)
    }

    /// The count for one request kind by its status name (0 for an unknown name).
    public func count(of name: String) -> UInt64 {
        if name == "other" { return counts[Self.otherSlot].load(ordering: .relaxed) }
        guard let slot = Self.names.firstIndex(of: name) else { return 0 }
        return counts[slot].load(ordering: .relaxed)
    }

    /// The `status` line: the total, then each kind seen at least once, in opcode order
    /// (a kind not listed was never sent).
    public func statusLine() -> String {
        var total: UInt64 = 0
        var parts: [String] = []
        for slot in 0..<Self.slots {
            let n = counts[slot].load(ordering: .relaxed)
            guard n > 0 else { continue }
            total &+= n
            parts.append("\(slot == Self.otherSlot ? "other" : Self.names[slot]!)=\(n)")
        }
        return "requests: " + (["total=\(total)"] + parts).joined(separator: " ")
    }
}
