import Glibc
import SnapFSBacking

/// Reads bytes of a file at an offset (pread semantics: returns the bytes read, fewer at
/// the end of the file, or -1). The WAL tracker reads the log through it.
public protocol PositionalReader {
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int
}

/// A backing descriptor as a ``PositionalReader``.
public struct DescriptorReader: PositionalReader {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + done)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return done > 0 ? done : -1 }
            if n == 0 { break }
            done += n
        }
        return done
    }
}

/// Reads served from bytes already in hand where they cover the range asked for: the
/// write being noted (`current`) and the small write just before it (`previous`; SQLite
/// writes a frame's header and then its page), the current one winning where they
/// overlap. What they do not cover comes from `base`, or (`fallback` false) fails.
struct OverlayReader<Base: PositionalReader>: PositionalReader {
    typealias Segment = (offset: Int64, bytes: UnsafeRawBufferPointer)
    let base: Base
    let previous: Segment?
    let current: Segment
    let fallback: Bool

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        if buffer.isEmpty { return 0 }
        var position = offset
        let end = offset + Int64(buffer.count)
        while position < end {
            let piece: (Segment, Int64)
            if let found = Self.piece(current, at: position, before: end) {
                piece = found
            } else if let previous, let found = Self.piece(previous, at: position, before: end) {
                // Up to where the current write starts, if it starts within.
                let stop = current.offset > position ? min(found.1, current.offset) : found.1
                piece = (found.0, stop)
            } else {
                return fallback ? base.read(into: buffer, at: offset) : -1
            }
            let (segment, stop) = piece
            let from = Int(position - segment.offset)
            let count = Int(stop - position)
            (buffer.baseAddress! + Int(position - offset)).copyMemory(from: segment.bytes.baseAddress! + from, byteCount: count)
            position = stop
        }
        return buffer.count
    }

    /// The part of `segment` from `position` on, up to `end`: the segment and where it stops.
    private static func piece(_ segment: Segment, at position: Int64, before end: Int64) -> (Segment, Int64)? {
        let segmentEnd = segment.offset + Int64(segment.bytes.count)
        guard segment.offset <= position, position < segmentEnd else { return nil }
        return (segment, min(segmentEnd, end))
    }
}

/// A commit found in a WAL: the frame that ends a transaction, now valid.
public struct WALCommit: Equatable, Sendable {
    /// The commit frame's number (from 1) in the current log generation.
    public var frame: UInt32
    /// The database's size in pages after the transaction.
    public var databasePages: UInt32
    public var checkpointSequence: UInt32
    /// How many transactions became committed with it (more than one when the log's pages
    /// reach snapfs in batches, from the kernel's page cache).
    public var transactions: Int

    package init(frame: UInt32, databasePages: UInt32, checkpointSequence: UInt32, transactions: Int = 1) {
        self.frame = frame
        self.databasePages = databasePages
        self.checkpointSequence = checkpointSequence
        self.transactions = transactions
    }
}

/// Follows one WAL as the writer appends to it, and says when a transaction becomes
/// committed: when a frame whose header carries a database size (a commit frame) and all
/// frames before it verify (salts equal the header's, cumulative checksum right). That
/// is the moment SQLite's own recovery would replay the transaction, so it is the commit.
///
/// Incremental: frames are verified once, from the last verified one on, and only when a
/// commit frame header has been written (SQLite writes each frame header and its page in
/// two writes, and may rewrite headers of the current transaction — `walRewriteChecksums` —
/// before its commit becomes valid). A write into frames already verified but not yet
/// committed sends verification back to the last commit; a write into committed frames
/// of the same generation (not something SQLite does) makes the tracker rescan the log.
///
/// Keeps, for the committed frames, the newest frame of every page: what a snapshot must
/// lay over the database file to hold exactly the committed state.
///
/// Reads back nothing it was just given: a frame is verified from the write that
/// completes it and the small write before it (its header) as soon as they hold it all,
/// so that in the usual run (header, page; header, page, commit) a commit reads no byte
/// of the log. (Every write to the log passes through here, in the order it reached the
/// file, so the bytes in hand are the file's.)
///
/// A log the kernel caches (``noteWrite(offset:data:reader:inOrder:)`` with `inOrder`
/// false) reaches snapfs as the kernel writes its dirty pages back: whole pages, several
/// frames and commits at once, and not always from the start (background write-back
/// starts where it last stopped; a frame header may be cut by a page boundary). Nothing
/// then says that the bytes before a write are written already, so a new generation's
/// header sends the tracker over the whole log again, and after every write frames are
/// verified as far as they verify. Checksums and salts keep it exact: a frame not yet
/// written back holds the previous generation's bytes and does not verify.
public struct WALTracker: Sendable {
    public private(set) var header: WALHeader?
    /// Frames through the last valid commit frame.
    public private(set) var committedFrames: UInt32 = 0
    public private(set) var committedDatabasePages: UInt32 = 0
    /// Page number → its newest committed frame.
    public private(set) var committedPages: [UInt32: UInt32] = [:]
    private var committedChecksum = WALChecksum()
    private var verifiedFrames: UInt32 = 0
    private var verifiedChecksum = WALChecksum()
    private var pendingPages: [UInt32: UInt32] = [:]
    /// The highest frame whose written header carries a database size.
    private var pendingCommitFrame: UInt32 = 0
    private var needsRescan = true
    /// The previous write, when it was small (a frame header): its offset and bytes.
    private var recent: (offset: Int64, bytes: [UInt8])?
    /// The end of the furthest write seen: a frame past it is not all written yet.
    private var writtenEnd: Int64 = 0
    /// Commits reported since the tracker was made (a rescan counts only those from the
    /// frame it reports from), so that a write completing several says how many.
    private var commitsVerified = 0
    static let recentLimit = 64

    public init() {}

    /// The write of `data` at `offset` has reached the log. Returns the newest commit it
    /// completed, if any, with the number of transactions it completed. `inOrder`: the
    /// log's writes come as the application makes them (false: from the kernel's cache).
    public mutating func noteWrite(offset: Int64, data: UnsafeRawBufferPointer, reader: some PositionalReader,
                                   inOrder: Bool = true) -> WALCommit? {
        guard offset >= 0, !data.isEmpty, offset <= Int64.max - Int64(data.count) else { return nil }
        let previous = recent
        recent = data.count <= Self.recentLimit ? (offset, Array(data)) : nil
        let committedBefore = commitsVerified
        var found = (previous?.bytes ?? []).withUnsafeBytes { bytes in
            noteWrite(offset: offset, data: data, inOrder: inOrder,
                      reader: OverlayReader(base: reader, previous: previous.map { ($0.offset, bytes) }, current: (offset, data), fallback: true))
        }
        found?.transactions = max(1, commitsVerified &- committedBefore)
        return found
    }

    private mutating func noteWrite<Base>(offset: Int64, data: UnsafeRawBufferPointer, inOrder: Bool,
                                          reader: OverlayReader<Base>) -> WALCommit? {
        let end = offset + Int64(data.count)
        writtenEnd = max(writtenEnd, end)
        if offset < Int64(WALHeader.size) {
            let old = header
            readHeader(reader)
            if header != old {
                reset()
                if inOrder {
                    // A new generation: its frames are written from the start, after this.
                    writtenEnd = end
                    needsRescan = false
                } else {
                    // Written back in any order: later frames may be in the file already.
                    needsRescan = true
                }
            }
        }
        // A log first seen in the middle (snapfs mounted over it while in use).
        if header == nil && needsRescan && offset >= Int64(WALHeader.size) { readHeader(reader) }
        guard let header else { return nil }
        guard end > Int64(WALHeader.size) else { return nil }
        let frameSize = Int64(header.frameSize)
        let firstByte = max(offset, Int64(WALHeader.size)) - Int64(WALHeader.size)
        let lastByte = end - 1 - Int64(WALHeader.size)
        guard firstByte / frameSize < Int64(UInt32.max) - 1, lastByte / frameSize < Int64(UInt32.max) - 1 else { return nil }
        var first = UInt32(firstByte / frameSize) + 1
        let last = UInt32(lastByte / frameSize) + 1
        if !inOrder && !needsRescan && first <= committedFrames {
            // A page written back holds the end of committed frames as they were: only
            // the frames after them are news.
            guard last > committedFrames else { return nil }
            first = committedFrames + 1
        }
        var found: WALCommit?
        if needsRescan || first <= committedFrames {
            // A write over committed frames (not something SQLite does within a generation,
            // but the bytes may be the same): report only commits not reported before.
            let reportFrom = needsRescan ? (inOrder ? first : 1) : max(first, committedFrames + 1)
            found = rescan(reader, reportingFrom: reportFrom)
        } else if first <= verifiedFrames {
            forgetUncommittedVerification()
        }
        if !inOrder {
            // Pages in any order: a commit header may have come before a gap that this
            // write fills, or be cut by a page boundary. Verify as far as frames verify
            // (each frame is read once; a write leaving a gap costs one read at it).
            return verify(reader, upTo: UInt32.max - 1, reportingFrom: 1) ?? found
        }
        // Commit frame headers among the written bytes.
        var frame = first
        while frame <= last {
            let headerStart = header.frameOffset(frame)
            if headerStart >= offset, headerStart + 8 <= end,
               let size = SQLiteFormat.bigEndian32(data, at: Int(headerStart - offset) + 4), size != 0 {
                pendingCommitFrame = max(pendingCommitFrame, frame)
            }
            frame += 1
        }
        guard pendingCommitFrame > committedFrames else {
            // Frames complete in the bytes in hand verify now (nothing is read for them).
            let inHand = OverlayReader(base: reader.base, previous: reader.previous, current: reader.current, fallback: false)
            return verify(inHand, upTo: last, reportingFrom: first) ?? found
        }
        // Not past the furthest write: a commit frame's header comes before its page.
        let written = UInt32(min((writtenEnd - Int64(WALHeader.size)) / frameSize, Int64(UInt32.max - 1)))
        return verify(reader, upTo: min(pendingCommitFrame, written), reportingFrom: first) ?? found
    }

    /// The log was truncated to `size` bytes.
    public mutating func noteTruncate(to size: Int64) {
        recent = nil
        writtenEnd = min(writtenEnd, max(size, 0))
        guard let header else { return }
        if size < Int64(WALHeader.size) {
            self.header = nil
            reset()
            needsRescan = true
            return
        }
        let whole = UInt32(min((size - Int64(WALHeader.size)) / Int64(header.frameSize), Int64(UInt32.max - 1)))
        if whole < committedFrames {
            needsRescan = true
        } else if whole < verifiedFrames {
            forgetUncommittedVerification()
        }
    }

    /// Reads the whole log again from its header (the first write seen, or after an
    /// unexpected overwrite). Reports the newest commit at or after frame `reportingFrom`.
    public mutating func rescan(_ reader: some PositionalReader, reportingFrom: UInt32 = 1) -> WALCommit? {
        readHeader(reader)
        reset()
        needsRescan = false
        guard header != nil else { return nil }
        return verify(reader, upTo: UInt32.max - 1, reportingFrom: reportingFrom)
    }

    private mutating func readHeader(_ reader: some PositionalReader) {
        var bytes = [UInt8](repeating: 0, count: WALHeader.size)
        let n = bytes.withUnsafeMutableBytes { reader.read(into: $0, at: 0) }
        header = n == WALHeader.size ? bytes.withUnsafeBytes { WALHeader($0) } : nil
    }

    /// Frames after the last commit were written again: verify them afresh.
    private mutating func forgetUncommittedVerification() {
        verifiedFrames = committedFrames
        verifiedChecksum = committedChecksum
        pendingPages = [:]
    }

    private mutating func reset() {
        committedFrames = 0
        committedDatabasePages = 0
        committedPages = [:]
        committedChecksum = header?.checksum ?? WALChecksum()
        verifiedFrames = 0
        verifiedChecksum = committedChecksum
        pendingPages = [:]
        pendingCommitFrame = 0
    }

    /// Verifies frames after the verified ones, up to `target`; commits what it can.
    private mutating func verify(_ reader: some PositionalReader, upTo target: UInt32, reportingFrom: UInt32) -> WALCommit? {
        guard let header else { return nil }
        var found: WALCommit?
        var frame = [UInt8](repeating: 0, count: header.frameSize)
        while verifiedFrames < target {
            let index = verifiedFrames + 1
            let ok = frame.withUnsafeMutableBytes { buffer -> Bool in
                guard reader.read(into: buffer, at: header.frameOffset(index)) == header.frameSize else { return false }
                let bytes = UnsafeRawBufferPointer(buffer)
                guard let page = SQLiteFormat.bigEndian32(bytes, at: 0), page != 0,
                      let size = SQLiteFormat.bigEndian32(bytes, at: 4),
                      SQLiteFormat.bigEndian32(bytes, at: 8) == header.salt1,
                      SQLiteFormat.bigEndian32(bytes, at: 12) == header.salt2,
                      let stored1 = SQLiteFormat.bigEndian32(bytes, at: 16),
                      let stored2 = SQLiteFormat.bigEndian32(bytes, at: 20) else { return false }
                var sum = verifiedChecksum
                sum.add(UnsafeRawBufferPointer(rebasing: bytes[0..<8]), bigEndian: header.bigEndianChecksum)
                sum.add(UnsafeRawBufferPointer(rebasing: bytes[WALHeader.frameHeaderSize...]), bigEndian: header.bigEndianChecksum)
                guard sum == WALChecksum(stored1, stored2) else { return false }
                verifiedFrames = index
                verifiedChecksum = sum
                pendingPages[page] = index
                if size != 0 {
                    committedFrames = index
                    committedChecksum = sum
                    committedDatabasePages = size
                    committedPages.merge(pendingPages) { _, newer in newer }
                    pendingPages = [:]
                    if index >= reportingFrom {
                        commitsVerified &+= 1
                        found = WALCommit(frame: index, databasePages: size, checkpointSequence: header.checkpointSequence)
                    }
                }
                return true
            }
            if !ok { break }
        }
        if committedFrames >= pendingCommitFrame { pendingCommitFrame = 0 }
        return found
    }
}
