/// How much snapfs's page cache holds and when its dirty data goes to the backing files
/// (`--cache-size`, `--dirty-limit`, `--dirty-age`).
public struct CachePolicy: Sendable, Equatable {
    /// Most bytes of cached file data, clean and dirty; 0 turns the cache off (every write
    /// goes straight to the backing file).
    public var size: Int = 256 << 20
    /// Dirty bytes past which writers write back themselves before going on; nil: half the size.
    public var dirtyLimit: Int?
    /// Dirty data older than this is written back by the flusher thread.
    public var dirtyAgeMs: Int64 = 5_000

    /// The smallest cache that is not off (a few pages; tests use it to force eviction).
    public static let minimumSize = 16 * PageCache.pageSize

    public init() {}

    /// No cache: writes go straight to the backing files.
    public static var off: CachePolicy {
        var policy = CachePolicy()
        policy.size = 0
        return policy
    }

    public var isEnabled: Bool { size > 0 }

    /// The cache's configuration; nil when off. Sizes must have been validated (``problems``).
    public var configuration: PageCache.Configuration? {
        guard isEnabled else { return nil }
        let size = size / PageCache.pageSize * PageCache.pageSize
        let limit = min(size, dirtyLimit ?? size / 2)
        return PageCache.Configuration(capacity: size, dirtyLimit: limit, maxWriteBack: min(1 << 20, size))
    }

    /// What is wrong with the sizes, one sentence each.
    public var problems: [String] {
        var found: [String] = []
        if size != 0 && size < Self.minimumSize {
            found.append("cache_size=\(size) is below the smallest cache of \(Self.minimumSize) bytes (0 turns the cache off)")
        }
        if let dirtyLimit, dirtyLimit < 0 || (size > 0 && dirtyLimit > size) {
            found.append("dirty_limit=\(dirtyLimit) is not between 0 and the cache size (\(size))")
        }
        return found
    }
}
