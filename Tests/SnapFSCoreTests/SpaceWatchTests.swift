import Synchronization
import Glibc
import Testing
@testable import SnapFSCore

@Suite struct SpaceWatchTests {
    @Test func shortBelowTheReserveAndAskedAtMostEveryQuarterSecond() throws {
        let free = Atomic<Int64>(200 << 20)
        let asked = Atomic<Int>(0)
        let watch = SpaceWatch(reserve: SpaceWatch.reserve(cacheBytes: 8 << 20)) {
            asked.add(1, ordering: .relaxed)
            return free.load(ordering: .relaxed)
        }
        #expect(watch.reserve == (8 << 20) + (128 << 20))
        #expect(!watch.isShort())
        // The disk fills: the answer is kept for a quarter of a second, then asked again.
        free.store(100 << 20, ordering: .relaxed)
        #expect(!watch.isShort())
        #expect(asked.load(ordering: .relaxed) == 1)
        usleep(300_000)
        #expect(watch.isShort())
        #expect(asked.load(ordering: .relaxed) == 2)
    }

    @Test func unknownFreeSpaceCountsAsPlenty() {
        #expect(!SpaceWatch(reserve: 1 << 30) { nil }.isShort())
    }
}
