import Glibc
import SnapFSBacking
import Synchronization

/// Whether the backing filesystem is short of space for what the kernel's write-back cache
/// may have acknowledged and not yet handed over (see
/// `SnapFileSystem.bypassesKernelCacheWhenFirstOpened`). Asked at opens, so the answer
/// (one `fstatvfs`) is kept for a quarter of a second.
final class SpaceWatch: Sendable {
    /// Free bytes below which the backing filesystem counts as short: what snapfs's page
    /// cache can hold, plus what the kernel lets one FUSE mount keep dirty (its `strictlimit`
    /// share, 1% of the dirty threshold, about 50 MiB on a machine with 24 GiB), doubled
    /// for margin.
    let reserve: Int64
    private let free: @Sendable () -> Int64?
    /// The last answer, and when it was taken (monotonic µs; 0: never).
    private let checked = Atomic<Int64>(0)
    private let short = Atomic<Bool>(false)
    static let refreshMicroseconds: Int64 = 250_000

    /// `free`: the bytes an unprivileged user could still allocate (nil if unknown).
    init(reserve: Int64, free: @escaping @Sendable () -> Int64?) {
        self.reserve = reserve
        self.free = free
    }

    /// The reserve for a page cache of `cacheBytes`.
    static func reserve(cacheBytes: Int) -> Int64 { Int64(cacheBytes) + 128 << 20 }

    func isShort() -> Bool {
        let now = MonotonicClock.microseconds()
        let last = checked.load(ordering: .acquiring)
        if last != 0 && now - last < Self.refreshMicroseconds { return short.load(ordering: .relaxed) }
        // Unknown counts as plenty: the cached path is the one that works everywhere.
        let answer = free().map { $0 < reserve } ?? false
        short.store(answer, ordering: .relaxed)
        checked.store(now, ordering: .releasing)
        return answer
    }
}
