@testable import SnapFSCore
@testable import SnapFSSnapshots
import Testing

@Suite struct ControlCommandTests {
    func parse(_ text: String) throws(ControlCommand.ParseError) -> ControlCommand {
        try ControlCommand.parse(Array(text.utf8))
    }

    @Test func snapshotCommands() throws {
        #expect(try parse("snapshot\n") == .snapshot(label: nil, force: false, trigger: Trigger(kind: .control)))
        #expect(try parse("snapshot nightly") == .snapshot(label: "nightly", force: false, trigger: Trigger(kind: .control)))
        #expect(try parse("snapshot --force --trigger=command before-upgrade\r\n")
            == .snapshot(label: "before-upgrade", force: true, trigger: Trigger(kind: .command)))
        #expect(try parse("snapshot --trigger=sqlite:db/app.db")
            == .snapshot(label: nil, force: false, trigger: Trigger(kind: .sqlite, detail: "db/app.db")))
        #expect(try parse("  snapshot   x  ") == .snapshot(label: "x", force: false, trigger: Trigger(kind: .control)))
        #expect(try parse("snapshot --no-wait x") == .snapshot(label: "x", force: false, trigger: Trigger(kind: .control), wait: false))
        #expect(try parse("snapshot --force --no-wait")
            == .snapshot(label: nil, force: true, trigger: Trigger(kind: .control), wait: false))
    }

    @Test func otherCommands() throws {
        #expect(try parse("prune") == .prune)
        #expect(try parse("delete 20261125T112233.456Z") == .delete(name: "20261125T112233.456Z"))
        #expect(try parse("hold a") == .hold(name: "a"))
        #expect(try parse("release a\n") == .release(name: "a"))
        #expect(try parse("flush\n") == .flush)
    }

    @Test func malformedCommandsAreRefusedWithAReason() {
        for bad in ["", "\n", "snap", "snapshot a b", "snapshot a/b", "snapshot .x", "snapshot -x", "snapshot --what",
                    "snapshot --trigger=bogus", "snapshot --nowait", "snapshot --no-wait=1", "prune now", "flush all", "delete", "delete a b", "hold", "snapshot a\nprune",
                    "snapshot " + String(repeating: "x", count: 65), "snapshot tab\there"] {
            #expect(throws: ControlCommand.ParseError.self, "\(bad)") { try parse(bad) }
        }
        #expect(throws: ControlCommand.ParseError.self) { try ControlCommand.parse([0xFF, 0xFE, 0x00]) }
        #expect(throws: ControlCommand.ParseError.self) { try ControlCommand.parse([UInt8](repeating: 0x61, count: 5000)) }
    }
}
