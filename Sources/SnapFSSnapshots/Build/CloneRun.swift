import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// The state one clone shares between its worker threads: what to do, the first error, the
/// work stack, and the registry that keeps the source's hard links linked in the clone.
final class CloneRun: @unchecked Sendable {
    let method: CloneMethod
    /// Names skipped in the top directory, NUL-terminated.
    let excludedAtTop: [[CChar]]
    let effectiveUser: uid_t
    let effectiveGroup: gid_t
    /// `O_NOATIME` when we may use it (root or CAP_FOWNER), so cloning leaves the live
    /// tree's access times alone; 0 otherwise.
    let noAccessTime: Int32
    /// The process umask, which shapes the mode of files we create; nil if unknown.
    let umask: mode_t?
    let stack = WorkStack<CloneDirectory>()

    private let firstError = Mutex<Errno?>(nil)
    private let failedFlag = Atomic<Bool>(false)
    private let statistics = Mutex(CloneStatistics())
    /// Source inodes with more than one link whose first name was cloned (lock order: leaf).
    let hardLinks = Mutex<[InodeKey: HardLinkOrigin]>([:])

    /// Objects the hard-link method copies instead (see ``TreeCloner/copyInstead``).
    let copyInstead: Set<BackingKey>
    /// Paths left out (``SnapshotExclusions``), and whether there are any: with none, an
    /// entry costs one look at this flag.
    let exclusions: SnapshotExclusions
    let excluding: Bool

    init(method: CloneMethod, excludedAtTop: Set<String>, copyInstead: Set<BackingKey> = [],
         exclusions: SnapshotExclusions = .none) {
        self.method = method
        self.copyInstead = copyInstead
        self.exclusions = exclusions
        excluding = !exclusions.isEmpty
        self.excludedAtTop = excludedAtTop.map { Array($0.utf8CString) }
        effectiveUser = geteuid()
        effectiveGroup = getegid()
        noAccessTime = effectiveUser == 0 ? SNAPFS_O_NOATIME : 0
        umask = Self.readUmask()
    }

    var failed: Bool { failedFlag.load(ordering: .acquiring) }

    /// The first error is the one reported; later ones are consequences or cancellations.
    var error: Errno? { firstError.withLock { $0 } }

    func fail(_ error: Errno) {
        firstError.withLock { if $0 == nil { $0 = error } }
        failedFlag.store(true, ordering: .releasing)
    }

    func add(_ counts: CloneStatistics) {
        statistics.withLock { $0 += counts }
    }

    var totals: CloneStatistics { statistics.withLock { $0 } }

    func isExcludedAtTop(_ name: UnsafePointer<CChar>) -> Bool {
        for excluded in excludedAtTop where strcmp(excluded, name) == 0 { return true }
        return false
    }

    /// Whether the entry `name` of `directory` is left out by the user's patterns (callers
    /// look at ``excluding`` first).
    func isExcluded(_ name: UnsafePointer<CChar>, in directory: CloneDirectory) -> Bool {
        exclusions.excludes(name, in: directory.path)
    }

    /// Whether a file created with `permissions` (0o777 bits) ends up with exactly `mode`.
    func creationGives(_ mode: mode_t, from permissions: mode_t) -> Bool {
        guard let umask else { return false }
        return permissions & ~umask == mode
    }

    /// Reads "Umask:" from /proc/self/status; `umask(2)` cannot be read without setting it,
    /// which would race with other threads creating files.
    private static func readUmask() -> mode_t? {
        guard let status = readWholeFile("/proc/self/status") else { return nil }
        let key = Array("Umask:".utf8)
        var index = 0
        while index + key.count <= status.count {
            if status[index] == key[0] && Array(status[index..<index + key.count]) == key {
                var value: mode_t = 0
                var position = index + key.count
                while position < status.count && (status[position] == 0x20 || status[position] == 0x09) { position += 1 }
                var digits = 0
                while position < status.count, (0x30...0x37).contains(status[position]) {
                    value = value * 8 + mode_t(status[position] - 0x30)
                    position += 1
                    digits += 1
                }
                return digits > 0 ? value : nil
            }
            while index < status.count && status[index] != 0x0A { index += 1 }
            index += 1
        }
        return nil
    }
}

/// A source inode, for finding the other names of a hard-linked file.
struct InodeKey: Hashable {
    let device: UInt64
    let inode: UInt64
}

/// Where the first name of a hard-linked source file was cloned, and whether it is ready to
/// be linked to.
final class HardLinkOrigin: @unchecked Sendable {
    static let pending = 0, made = 1, failed = 2

    let directory: CloneDirectory
    let name: [CChar]
    let state = Atomic<Int>(HardLinkOrigin.pending)

    init(directory: CloneDirectory, name: UnsafePointer<CChar>) {
        self.directory = directory
        self.name = Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
    }
}
