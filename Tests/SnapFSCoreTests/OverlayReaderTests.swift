@testable import SnapFSCore
@testable import SnapFSSQLite
import Testing

/// The WAL tracker's reads served from the writes in hand must be the file's bytes.
@Suite struct OverlayReaderTests {
    @Test func readsInHandAreTheFilesBytes() {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let file = MemoryFile()
            file.bytes = (0..<3000).map { _ in UInt8.random(in: 0...255, using: &random) }
            // Two writes that reached the file: the previous (small) and the current one.
            let previousStart = Int.random(in: 0..<2900, using: &random)
            let previous = Array(file.bytes[previousStart..<min(3000, previousStart + Int.random(in: 1...64, using: &random))])
            let currentStart = Int.random(in: 0..<2900, using: &random)
            let current = Array(file.bytes[currentStart..<min(3000, currentStart + Int.random(in: 1...600, using: &random))])
            previous.withUnsafeBytes { p in
                current.withUnsafeBytes { c in
                    let withFile = OverlayReader(base: file, previous: (Int64(previousStart), p), current: (Int64(currentStart), c), fallback: true)
                    let inHand = OverlayReader(base: file, previous: (Int64(previousStart), p), current: (Int64(currentStart), c), fallback: false)
                    for _ in 0..<20 {
                        let offset = Int.random(in: 0..<3000, using: &random)
                        let count = Int.random(in: 1...200, using: &random)
                        let expected = Array(file.bytes[offset..<min(3000, offset + count)])
                        var got = [UInt8](repeating: 0, count: count)
                        let before = file.reads
                        let n = got.withUnsafeMutableBytes { withFile.read(into: $0, at: Int64(offset)) }
                        #expect(Array(got.prefix(max(n, 0))) == expected)
                        let covered = (offset..<offset + count).allSatisfy { byte in
                            (previousStart..<previousStart + previous.count).contains(byte)
                                || (currentStart..<currentStart + current.count).contains(byte)
                        }
                        // Covered ranges are served without reading the file.
                        #expect(covered == (file.reads == before))
                        var held = [UInt8](repeating: 0, count: count)
                        let m = held.withUnsafeMutableBytes { inHand.read(into: $0, at: Int64(offset)) }
                        #expect(covered ? (m == count && held == expected) : m == -1)
                    }
                }
            }
        }
    }

    @Test func theCurrentWriteWinsWhereTheyOverlap() {
        let file = MemoryFile()
        file.bytes = [UInt8](repeating: 9, count: 16)
        let previous: [UInt8] = [1, 1, 1, 1, 1, 1, 1, 1]   // at 0
        let current: [UInt8] = [2, 2, 2, 2]                 // at 2
        previous.withUnsafeBytes { p in
            current.withUnsafeBytes { c in
                let reader = OverlayReader(base: file, previous: (0, p), current: (2, c), fallback: false)
                var got = [UInt8](repeating: 0, count: 8)
                #expect(got.withUnsafeMutableBytes { reader.read(into: $0, at: 0) } == 8)
                #expect(got == [1, 1, 2, 2, 2, 2, 1, 1])
            }
        }
    }
}
