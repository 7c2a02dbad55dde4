import Glibc
import SnapFSSnapshots
import Synchronization
import SystemPackage

/// How many files and directories the daemon holds open for each user, bounded per user.
///
/// Every open file and directory of the mount costs the daemon a descriptor (and an open
/// directory a listing buffer), all from one process limit that every user shares. On a
/// local filesystem a user's open files count against that user's own processes; here one
/// user could use up the daemon's limit and make every other user's open fail. So each
/// user (by the uid of the request) may hold at most ``Limits/files`` files and
/// ``Limits/directories`` directories open; past that, that user's open fails with EMFILE,
/// and the rest of the daemon's descriptors stay for the others and for the daemon's own
/// work (snapshots, copy-up). Root is counted but not bounded.
public final class HandleLedger: Sendable {
    public struct Limits: Sendable, Equatable {
        public var files: Int
        public var directories: Int

        public init(files: Int, directories: Int) {
            self.files = files
            self.directories = directories
        }

        /// A quarter of the daemon's descriptor limit for files, so that no user holds more
        /// than a quarter of the descriptors (the descriptor pool leaves another quarter to
        /// the daemon); 1024 directories (the soft descriptor limit of a user's process),
        /// each holding a listing buffer of 32 KiB.
        public static func defaults(descriptorLimit: Int) -> Limits {
            Limits(files: max(64, descriptorLimit / 4), directories: 1024)
        }
    }

    public enum Kind: Sendable {
        case file
        case directory
    }

    private struct Held {
        var files = 0
        var directories = 0
        var total: Int { files + directories }
    }

    public let limits: Limits
    private let held = Mutex<[uid_t: Held]>([:])

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Counts one more handle of `kind` for `uid`; throws EMFILE if that user holds the most
    /// allowed already. The charge is given back when the returned token goes.
    public func charge(_ uid: uid_t, _ kind: Kind) throws(Errno) -> HandleCharge {
        try held.withLock { (held: inout [uid_t: Held]) throws(Errno) in
            var mine = held[uid, default: Held()]
            switch kind {
            case .file:
                if uid != 0 && mine.files >= limits.files { throw Errno.tooManyOpenFiles }
                mine.files += 1
            case .directory:
                if uid != 0 && mine.directories >= limits.directories { throw Errno.tooManyOpenFiles }
                mine.directories += 1
            }
            held[uid] = mine
        }
        return HandleCharge(ledger: self, uid: uid, kind: kind)
    }

    fileprivate func giveBack(_ uid: uid_t, _ kind: Kind) {
        held.withLock { held in
            guard var mine = held[uid] else { return }
            switch kind {
            case .file: mine.files -= 1
            case .directory: mine.directories -= 1
            }
            held[uid] = mine.total > 0 ? mine : nil
        }
    }

    /// Handles held in all, and the user holding the most (uid, count), for `status`.
    public func usage() -> (total: Int, top: (uid: uid_t, count: Int)?) {
        held.withLock { held in
            let total = held.values.reduce(0) { $0 + $1.total }
            let top = held.max { $0.value.total < $1.value.total }.map { (uid: $0.key, count: $0.value.total) }
            return (total, top)
        }
    }

    /// Handles `uid` holds now.
    public func held(by uid: uid_t) -> Int {
        held.withLock { $0[uid]?.total ?? 0 }
    }
}

/// One handle counted for a user by ``HandleLedger``; given back when it goes (with the
/// open file or directory that keeps it).
public final class HandleCharge: Sendable {
    private let ledger: HandleLedger
    private let uid: uid_t
    private let kind: HandleLedger.Kind

    fileprivate init(ledger: HandleLedger, uid: uid_t, kind: HandleLedger.Kind) {
        self.ledger = ledger
        self.uid = uid
        self.kind = kind
    }

    deinit { ledger.giveBack(uid, kind) }
}
