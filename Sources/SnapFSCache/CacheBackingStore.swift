import SystemPackage

/// What the ``PageCache`` needs from the backing files, each named by a key the caller
/// chooses (snapfs uses the FUSE node id, which survives a copy-up to a new backing inode).
///
/// Implementations answer for the backing object the key names *now*; they must not
/// cache data themselves. Every call may be made with the page cache's lock held, so an
/// implementation must never call back into the cache.
public protocol CacheBackingStore: Sendable {
    /// Reads up to `buffer.count` bytes at `offset`; fewer (0 at or past the end) only at EOF.
    func read(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int
    /// Writes some of `data` at `offset` and returns how much (a short write is allowed).
    func write(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) -> Int
    /// Writes some of `segments`, one after the other in the file, starting at `offset`,
    /// and returns how much (a short write is allowed). Lets write-back write contiguous
    /// pages from where they are, without gathering them first.
    func write(_ file: UInt64, _ segments: [UnsafeRawBufferPointer], at offset: Int64) throws(Errno) -> Int
    /// fsync(2) (`dataOnly`: fdatasync(2)) of the backing file.
    func sync(_ file: UInt64, dataOnly: Bool) throws(Errno)
    /// The backing file's size.
    func size(_ file: UInt64) throws(Errno) -> Int64
    /// ftruncate(2) of the backing file.
    func truncate(_ file: UInt64, to size: Int64) throws(Errno)
}

extension CacheBackingStore {
    /// One segment at a time, through ``write(_:_:at:)-(_,UnsafeRawBufferPointer,_)``.
    public func write(_ file: UInt64, _ segments: [UnsafeRawBufferPointer], at offset: Int64) throws(Errno) -> Int {
        var done = 0
        for segment in segments where segment.count > 0 {
            let n = try write(file, segment, at: offset + Int64(done))
            done += n
            if n < segment.count { break }
        }
        return done
    }
}
