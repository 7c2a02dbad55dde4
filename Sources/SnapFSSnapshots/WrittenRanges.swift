/// The byte ranges a database file was written at since its last commit snapshot. A
/// reflink snapshot gives those blocks a copy of their own instead of sharing them with
/// the live file (see `SnapshotEngine.clone(_:into:size:blockSize:)`): the next transaction most likely
/// writes the same pages again (the header page, the leaf that is filling, hot rows), and
/// a block the live file does not share is written in place, not copied on write — no
/// copy-on-write work in the commit, and the live file keeps its extents (a clone costs
/// per extent). Only a hint: the snapshot's content is the live file's whichever way each
/// block gets there.
package struct WrittenRanges: Sendable, Equatable {
    /// More ranges or bytes than this: the transaction was not the small, repeating kind,
    /// and the snapshot simply shares every block.
    static let maxRanges = 16
    static let maxBytes: Int64 = 256 << 10

    /// Sorted, disjoint, not touching.
    private(set) var ranges: [Range<Int64>] = []
    private(set) var overflowed = false

    package init() {}

    package mutating func add(offset: Int64, length: Int64) {
        guard !overflowed, length > 0, offset >= 0, offset <= Int64.max - length else { return }
        var new = offset..<(offset + length)
        // Merge with every range it overlaps or touches.
        var kept: [Range<Int64>] = []
        kept.reserveCapacity(ranges.count + 1)
        var inserted = false
        for r in ranges {
            if r.upperBound < new.lowerBound {
                kept.append(r)
            } else if new.upperBound < r.lowerBound {
                if !inserted { kept.append(new); inserted = true }
                kept.append(r)
            } else {
                new = min(r.lowerBound, new.lowerBound)..<max(r.upperBound, new.upperBound)
            }
        }
        if !inserted { kept.append(new) }
        ranges = kept
        if ranges.count > Self.maxRanges || ranges.reduce(0, { $0 + Int64($1.count) }) > Self.maxBytes {
            overflowed = true
            ranges = []
        }
    }

    /// The ranges rounded out to whole blocks of `blockSize` and cut at `size` (the end
    /// of the last may then fall inside a block), merged again; empty if overflowed.
    func blocks(of blockSize: Int64, within size: Int64) -> [Range<Int64>] {
        guard !overflowed, blockSize > 0, size > 0 else { return [] }
        var out: [Range<Int64>] = []
        for r in ranges {
            let start = r.lowerBound / blockSize * blockSize
            guard start < size else { break }
            let end = min((r.upperBound + blockSize - 1) / blockSize * blockSize, size)
            if let last = out.last, last.upperBound >= start {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, end)
            } else {
                out.append(start..<end)
            }
        }
        return out
    }
}
