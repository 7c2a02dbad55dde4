@testable import SnapFSCore
@testable import SnapFSSnapshots
import Testing

@Suite struct WrittenRangesTests {
    func ranges(_ writes: [(Int64, Int64)]) -> WrittenRanges {
        var w = WrittenRanges()
        for (offset, length) in writes { w.add(offset: offset, length: length) }
        return w
    }

    @Test func overlappingAndTouchingWritesMerge() {
        let w = ranges([(8192, 100), (0, 4096), (4096, 10), (8000, 300), (20_000, 5)])
        #expect(w.ranges == [0..<4106, 8000..<8300, 20_000..<20_005])
        let all = ranges([(100, 10), (0, 1000), (500, 2000)])
        #expect(all.ranges == [0..<2500])
    }

    @Test func aWriteBetweenRangesKeepsThemSorted() {
        let w = ranges([(40_000, 10), (0, 10), (20_000, 10), (10_000, 10), (30_000, 10)])
        #expect(w.ranges.map(\.lowerBound) == [0, 10_000, 20_000, 30_000, 40_000])
    }

    @Test func emptyOrInvalidWritesAreIgnored() {
        let w = ranges([(0, 0), (-5, 10), (Int64.max - 1, 10)])
        #expect(w.ranges.isEmpty)
        #expect(!w.overflowed)
    }

    @Test func blocksRoundOutMergeAndStopAtTheEnd() {
        let w = ranges([(100, 10), (4000, 200), (12_288, 1), (40_000, 100)])
        // 100..<110 and 4000..<4200 round to 0..<8192; 12288 to 12288..<16384; the last
        // lies past the 30,000-byte file.
        #expect(w.blocks(of: 4096, within: 30_000) == [0..<8192, 12_288..<16_384])
        // A range over the end is cut at the end, inside its block.
        #expect(ranges([(28_000, 5000)]).blocks(of: 4096, within: 30_000) == [24_576..<30_000])
        #expect(w.blocks(of: 4096, within: 0).isEmpty)
    }

    @Test func tooManyRangesOrBytesMeanShareEverything() {
        var many = WrittenRanges()
        for i in 0..<Int64(WrittenRanges.maxRanges + 1) { many.add(offset: i * 100_000, length: 10) }
        #expect(many.overflowed)
        #expect(many.blocks(of: 4096, within: 1 << 30).isEmpty)
        many.add(offset: 0, length: 10)
        #expect(many.ranges.isEmpty)

        let big = ranges([(0, WrittenRanges.maxBytes + 1)])
        #expect(big.overflowed)
        let justEnough = ranges([(0, WrittenRanges.maxBytes)])
        #expect(!justEnough.overflowed)
        #expect(justEnough.ranges == [0..<WrittenRanges.maxBytes])
    }
}
