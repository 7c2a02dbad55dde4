import Testing
@testable import SnapFSCore

@Suite struct RequestCountsTests {
    @Test func countsByKindAndTotalsInOpcodeOrder() {
        let counts = RequestCounts()
        #expect(counts.statusLine() == "requests: total=0")
        for _ in 0..<3 { counts.count(opcode: 16) }   // write
        counts.count(opcode: 1)                         // lookup
        counts.count(opcode: 51)                        // tmpfile
        #expect(counts.count(of: "write") == 3)
        #expect(counts.count(of: "read") == 0)
        #expect(counts.statusLine() == "requests: total=5 lookup=1 write=3 tmpfile=1")
    }

    @Test func unknownOpcodesCountAsOther() {
        let counts = RequestCounts()
        counts.count(opcode: 7)        // a gap in the kernel's numbering
        counts.count(opcode: 4096)     // CUSE_INIT
        counts.count(opcode: .max)
        #expect(counts.count(of: "other") == 3)
        #expect(counts.statusLine() == "requests: total=3 other=3")
    }

    @Test func concurrentCountsAreNotLost() async {
        let counts = RequestCounts()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 { group.addTask { for _ in 0..<10_000 { counts.count(opcode: 3) } } }
        }
        #expect(counts.count(of: "getattr") == 40_000)
    }
}
