/// The 32-byte header of a SQLite write-ahead log (`NAME-wal`).
public struct WALHeader: Equatable, Sendable {
    public static let size = 32
    public static let frameHeaderSize = 24
    static let magic: UInt32 = 0x377f0682
    static let formatVersion: UInt32 = 3_007_000

    /// The low bit of the magic: checksums read the data as big-endian words.
    public var bigEndianChecksum: Bool
    public var pageSize: Int
    public var checkpointSequence: UInt32
    public var salt1: UInt32
    public var salt2: UInt32
    /// The header's own checksum, which is also where the first frame's checksum starts.
    public var checksum: WALChecksum

    /// Parses and verifies a header; nil unless magic, version, page size and checksum are right.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.size,
              let magic = SQLiteFormat.bigEndian32(bytes, at: 0), magic & ~1 == Self.magic,
              SQLiteFormat.bigEndian32(bytes, at: 4) == Self.formatVersion,
              let rawSize = SQLiteFormat.bigEndian32(bytes, at: 8), rawSize != 1,
              let size = SQLiteFormat.validPageSize(rawSize),
              let sequence = SQLiteFormat.bigEndian32(bytes, at: 12),
              let salt1 = SQLiteFormat.bigEndian32(bytes, at: 16),
              let salt2 = SQLiteFormat.bigEndian32(bytes, at: 20),
              let stored1 = SQLiteFormat.bigEndian32(bytes, at: 24),
              let stored2 = SQLiteFormat.bigEndian32(bytes, at: 28) else { return nil }
        let bigEndian = magic & 1 == 1
        var computed = WALChecksum()
        computed.add(UnsafeRawBufferPointer(rebasing: bytes[0..<24]), bigEndian: bigEndian)
        guard computed == WALChecksum(stored1, stored2) else { return nil }
        bigEndianChecksum = bigEndian
        pageSize = size
        checkpointSequence = sequence
        self.salt1 = salt1
        self.salt2 = salt2
        checksum = computed
    }

    /// Where frame `index` (counted from 1) starts.
    public func frameOffset(_ index: UInt32) -> Int64 {
        Int64(Self.size) + (Int64(index) - 1) * Int64(frameSize)
    }

    public var frameSize: Int { Self.frameHeaderSize + pageSize }
}

/// SQLite's cumulative WAL checksum: over 32-bit words taken in pairs,
/// `s0 += x[i] + s1; s1 += x[i+1] + s0`, wrapping.
public struct WALChecksum: Equatable, Sendable {
    public var s0: UInt32
    public var s1: UInt32

    public init(_ s0: UInt32 = 0, _ s1: UInt32 = 0) {
        self.s0 = s0
        self.s1 = s1
    }

    /// Adds `bytes`, whose length is a multiple of 8 (the bytes past the last whole pair are ignored).
    @inline(__always)
    public mutating func add(_ bytes: UnsafeRawBufferPointer, bigEndian: Bool) {
        var a = s0
        var b = s1
        var offset = 0
        let end = bytes.count & ~7
        if bigEndian {
            while offset < end {
                a &+= UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) &+ b
                b &+= UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)) &+ a
                offset += 8
            }
        } else {
            while offset < end {
                a &+= UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) &+ b
                b &+= UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)) &+ a
                offset += 8
            }
        }
        s0 = a
        s1 = b
    }
}
