import CLinux
import Glibc
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// `MOUNT/.snapfs-control`: a file that exists only in the mount. A command written to it
/// (see ``ControlCommand``) is carried out before the `write()` returns, which fails with
/// the command's errno if it failed; reading it gives the outcome of the last command
/// written on the same open file, then the mount's status lines.
public enum ControlFile {
    /// The node id the kernel knows the control file by (never one the inode table hands out).
    /// The FUSE edge serves that node itself; the filesystem's operations never see it.
    public static let nodeID: UInt64 = UInt64.max - 1

    /// Its attributes: a regular file owned by the backing root's owner, writable by it alone.
    public static func attributes(root: stat) -> stat {
        var st = stat()
        st.st_ino = UInt(nodeID)
        st.st_mode = S_IFREG | 0o644
        st.st_nlink = 1
        st.st_uid = root.st_uid
        st.st_gid = root.st_gid
        st.st_blksize = 4096
        st.st_atim = root.st_mtim
        st.st_mtim = root.st_mtim
        st.st_ctim = root.st_mtim
        return st
    }
}

/// One open of the control file: remembers the outcome of the last command written on it.
public final class ControlSession: Sendable {
    private let outcome = Mutex<String>("none")

    public init() {}

    var lastOutcome: String {
        get { outcome.withLock { $0 } }
        set { outcome.withLock { $0 = newValue } }
    }
}

extension SnapshotEngine {
    /// Carries out the command in `bytes`; returns the byte count, as `write()` does.
    public func controlWrite(_ session: ControlSession, _ bytes: UnsafeRawBufferPointer) throws(Errno) -> Int {
        let command: ControlCommand
        do {
            command = try ControlCommand.parse(bytes)
        } catch {
            session.lastOutcome = "error EINVAL \(error.message)"
            throw Errno.invalidArgument
        }
        do {
            session.lastOutcome = try perform(command)
        } catch {
            session.lastOutcome = "error \(Self.errnoName(error.errno)) \(error.message)"
            throw error.errno
        }
        return bytes.count
    }

    /// The control file's content for this open: outcome, then status.
    public func controlRead(_ session: ControlSession, offset: Int64, size: Int) -> [UInt8] {
        let text = (["result: \(session.lastOutcome)"] + statusLines()).joined(separator: "\n") + "\n"
        let bytes = Array(text.utf8)
        guard offset >= 0, offset < bytes.count else { return [] }
        let start = Int(offset)
        return Array(bytes[start..<min(bytes.count, start + size)])
    }

    private func perform(_ command: ControlCommand) throws(SnapshotFailure) -> String {
        switch command {
        case let .snapshot(label, force, trigger, wait):
            let outcome = try take(label: label, trigger: trigger, force: force, wait: wait)
            // Started: its moment is fixed; it is made durable with its batch once published.
            if case let .started(name) = outcome { return "ok started \(name)" }
            let (answer, name) = switch outcome {
            case let .created(metadata): ("ok snapshot \(metadata.name)", metadata.name)
            case let .unchanged(newest), let .started(newest): ("ok unchanged \(newest)", newest)
            }
            // Asked for explicitly: durable (with every snapshot before it) before the answer.
            do throws(SnapshotFailure) { try makeDurable() } catch {
                throw SnapshotFailure(error.errno, "snapshot \(name) is taken, but \(error.message)")
            }
            return answer
        case .prune:
            return "ok pruned \(try prune().count)"
        case let .delete(name):
            try delete(name)
            return "ok deleted \(name)"
        case let .hold(name):
            try setHeld(true, name)
            return "ok held \(name)"
        case let .release(name):
            try setHeld(false, name)
            return "ok released \(name)"
        case .flush:
            try flush()
            return "ok flushed"
        }
    }

    static func errnoName(_ errno: Errno) -> String {
        switch errno.rawValue {
        case EINVAL: "EINVAL"
        case ENOENT: "ENOENT"
        case EBUSY: "EBUSY"
        case ENOSPC: "ENOSPC"
        case EDQUOT: "EDQUOT"
        case EIO: "EIO"
        case EEXIST: "EEXIST"
        case EPERM: "EPERM"
        case EACCES: "EACCES"
        case EROFS: "EROFS"
        case ENOTSUP: "ENOTSUP"
        case EXDEV: "EXDEV"
        case EMFILE: "EMFILE"
        case ENFILE: "ENFILE"
        case ENOMEM: "ENOMEM"
        default: "E\(errno.rawValue)"
        }
    }
}
