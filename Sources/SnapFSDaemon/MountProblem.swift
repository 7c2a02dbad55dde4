import CLinux
/// Why a mount cannot be made, with the sentence and exit code the CLI reports.
public enum MountProblem: Error, Equatable, Sendable {
    case backingMissing(String)
    case backingNotDirectory(String)
    case mountpointMissing(String)
    case mountpointNotDirectory(String)
    case mountpointNotEmpty(String)
    case alreadyMounted(String)
    case fuseUnavailable(String)
    case overlapping(backing: String, mountpoint: String)
    case mountFailed(String)
    /// The mountpoint is a FUSE mount whose daemon is gone (stat gives ENOTCONN); the type
    /// as mountinfo names it (`fuse.snapfs`), if listed.
    case deadMount(String, type: String?)
    /// Another snapfs daemon serves this backing directory, or one inside it or around it.
    case backingInUse(backing: String, why: String)

    /// The documented exit code of `snapfs mount` for this problem.
    public var exitCode: Int32 {
        switch self {
        case .backingMissing, .backingNotDirectory: return ExitStatus.backingMissing
        case .mountpointMissing, .mountpointNotDirectory: return ExitStatus.mountpointMissing
        case .mountpointNotEmpty: return ExitStatus.mountpointNotEmpty
        case .alreadyMounted: return ExitStatus.alreadyMounted
        case .fuseUnavailable: return ExitStatus.fuseUnavailable
        case .overlapping: return ExitStatus.overlapping
        case .mountFailed: return ExitStatus.mountFailed
        case .backingInUse: return ExitStatus.backingInUse
        case .deadMount: return ExitStatus.deadMount
        }
    }

    public var message: String {
        switch self {
        case .backingMissing(let path): return "backing directory \(path) does not exist"
        case .backingNotDirectory(let path): return "backing directory \(path) is not a directory"
        case .mountpointMissing(let path): return "mountpoint \(path) does not exist"
        case .mountpointNotDirectory(let path): return "mountpoint \(path) is not a directory"
        case .mountpointNotEmpty(let path): return "mountpoint \(path) is not empty (use -o nonempty to mount over it anyway)"
        case .alreadyMounted(let path): return "mountpoint \(path) is already a mount point (busy)"
        case .fuseUnavailable(let why): return "cannot use /dev/fuse: \(why)"
        case let .overlapping(backing, mountpoint):
            return "mountpoint \(mountpoint) and backing directory \(backing) overlap; neither may lie inside the other"
        case .mountFailed(let why): return "mount failed: \(why)"
        case let .deadMount(path, type):
            let what = type == "fuse.snapfs" ? "a dead snapfs mount" : "a dead FUSE mount" + (type.map { " (\($0))" } ?? "")
            return "mountpoint \(path) is \(what): its daemon is gone (transport endpoint is not connected); clear it with `fusermount3 -u \(path)`, then mount again"
        case let .backingInUse(backing, why):
            return "backing directory \(backing) is already served by snapfs (\(why)); a second daemon would change its snapshots behind the first one's back"
        }
    }
}
