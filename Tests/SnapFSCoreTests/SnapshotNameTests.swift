@testable import SnapFSCore
@testable import SnapFSSnapshots
import Testing

@Suite struct SnapshotNameTests {
    // 2026-11-25T11:22:33.456Z
    let sample: Int64 = 1_795_605_753_456

    @Test func formatsInUTCWithMilliseconds() throws {
        #expect(try SnapshotName(timeMs: sample).description == "20261125T112233.456Z")
        #expect(try SnapshotName(timeMs: sample, label: "nightly").description == "20261125T112233.456Z-nightly")
        #expect(try SnapshotName(timeMs: 0).description == "19700101T000000.000Z")
        #expect(try SnapshotName(timeMs: sample).time.iso8601 == "2026-11-25T11:22:33.456Z")
    }

    @Test func parsesBackWhatItMakes() throws {
        for time in [Int64(0), 1, 999, 1000, sample, 951_782_400_000 /* 2000-02-29 */, UTCTime.latestMilliseconds] {
            for label in [nil, "nightly", "pre-restore", "été_2026", String(repeating: "x", count: 64)] {
                let name = try SnapshotName(timeMs: time, label: label)
                let parsed = try #require(SnapshotName(parsing: name.description))
                #expect(parsed == name)
                #expect(parsed.timeMs == time)
                #expect(parsed.label == label)
            }
        }
    }

    @Test func rejectsAnythingElse() {
        for stray in ["", ".meta", ".building-20261125T112233.456Z", "lost+found", "notes.txt",
                      "20261125T112233.456", "20261125T112233.456Z-", "20261125T112233.456Zx",
                      "20261125T112233.456Z--x", "20261125T112233.456Z-.x", "20261125T112233.456Z-a/b",
                      "20261125t112233.456Z", "20261125T112233,456Z", "2026112aT112233.456Z",
                      "20261325T112233.456Z", "20260230T112233.456Z", "20261125T242233.456Z",
                      "20261125T116033.456Z", "20261125T112260.456Z", "19691231T235959.999Z",
                      "+2026112T112233.456Z", "20261125T112233.4567Z", "20261125T112233.456Z-a b"] {
            #expect(SnapshotName(parsing: stray) == nil, "\(stray)")
        }
    }

    @Test func byteOrderIsTimeOrder() throws {
        let times: [Int64] = [0, 1, 999, 1000, 59_999, 60_000, sample - 1, sample, sample + 1, 4_102_444_800_000]
        var names: [SnapshotName] = []
        for (index, time) in times.enumerated() {
            names.append(try SnapshotName(timeMs: time, label: index % 2 == 0 ? "z\(index)" : nil))
        }
        for (a, b) in zip(names, names.dropFirst()) {
            #expect(a < b)
            #expect(a.description.utf8.lexicographicallyPrecedes(b.description.utf8))
        }
        #expect(names.shuffled().sorted() == names)
        // Same millisecond: the unlabelled name comes first.
        #expect(try SnapshotName(timeMs: sample) < SnapshotName(timeMs: sample, label: "a"))
    }

    @Test func nextIsStrictlyGreaterEvenInTheSameMillisecond() throws {
        let first = try SnapshotName.next(after: nil, nowMs: sample)
        #expect(first.timeMs == sample)
        let second = try SnapshotName.next(after: first, nowMs: sample, label: "a")
        #expect(second.timeMs == sample + 1)
        #expect(first < second)
        // A clock that went back still gives a later name.
        let third = try SnapshotName.next(after: second, nowMs: sample - 5000)
        #expect(third.timeMs == sample + 2)
        #expect(second < third)
        // A clock ahead of the newest is used as it is.
        #expect(try SnapshotName.next(after: third, nowMs: sample + 10).timeMs == sample + 10)
        // A burst in one millisecond stays unique and ordered.
        var newest: SnapshotName? = nil
        var seen: Set<SnapshotName> = []
        for _ in 0..<1000 {
            let name = try SnapshotName.next(after: newest, nowMs: sample)
            if let newest { #expect(newest < name) }
            #expect(seen.insert(name).inserted)
            newest = name
        }
    }

    @Test func labelRules() {
        func reason(_ label: String) -> String? {
            do { try SnapshotName.validateLabel(label); return nil } catch { return error.message }
        }
        #expect(reason("nightly") == nil)
        #expect(reason("a") == nil)
        #expect(reason("pre-restore") == nil)
        #expect(reason("v1.2_x+y@z") == nil)
        #expect(reason("été") == nil)
        #expect(reason(String(repeating: "a", count: 64)) == nil)
        #expect(reason(String(repeating: "é", count: 32)) == nil)  // 64 bytes
        #expect(reason("")?.contains("empty") == true)
        #expect(reason(String(repeating: "a", count: 65))?.contains("64 bytes") == true)
        #expect(reason(String(repeating: "é", count: 33))?.contains("64 bytes") == true)  // 33 characters, 66 bytes
        #expect(reason("a/b")?.contains("'/'") == true)
        #expect(reason("/")?.contains("'/'") == true)
        for white in ["a b", " a", "a\u{00A0}b", "a\u{2003}b", "a\u{3000}b"] {
            #expect(reason(white)?.contains("whitespace") == true, "\(white.unicodeScalars.map(\.value))")
        }
        for control in ["a\tb", "a\nb", "a\rb", "\u{1}", "a\u{1b}[31m", "a\u{7f}", "a\u{85}b", "a\u{0}b"] {
            #expect(reason(control)?.contains("control") == true, "\(control.unicodeScalars.map(\.value))")
        }
        #expect(reason(".hidden")?.contains("'.'") == true)
        #expect(reason(".")?.contains("'.'") == true)
        #expect(reason("-rf")?.contains("'-'") == true)
        #expect(reason("a\u{FFFD}b")?.contains("UTF-8") == true)
        // Reasons are one sentence.
        #expect(reason("a/b")!.hasSuffix("."))
        #expect(!reason("a b")!.contains("\n"))
        // A bad label makes no name.
        #expect(throws: SnapshotNameError.self) { try SnapshotName(timeMs: sample, label: "a/b") }
        #expect(throws: SnapshotNameError.self) { try SnapshotName.next(after: nil, nowMs: sample, label: "") }
    }

    @Test func timesOutsideTheNameRangeAreRefused() {
        #expect(throws: SnapshotNameError.self) { try SnapshotName(timeMs: -1) }
        #expect(throws: SnapshotNameError.self) { try SnapshotName(timeMs: UTCTime.latestMilliseconds + 1) }
    }

    @Test func calendarPeriods() throws {
        // 2026-03-29 is a Sunday, 2026-03-30 a Monday.
        let sunday = try #require(UTCTime(year: 2026, month: 3, day: 29, hour: 23, minute: 59, second: 59, millisecond: 999))
        let monday = try #require(UTCTime(milliseconds: sunday.milliseconds + 1))
        #expect(monday.day == 30 && monday.hour == 0)
        #expect(sunday.isoWeekStart != monday.isoWeekStart)
        #expect(sunday.isoWeekStart == sunday.dayNumber - 6)
        #expect(monday.isoWeekStart == monday.dayNumber)
        // The ISO week spanning new year (2025-12-29 Monday .. 2026-01-04 Sunday) is one week.
        let dec29 = try #require(UTCTime(year: 2025, month: 12, day: 29, hour: 0, minute: 0, second: 0, millisecond: 0))
        let jan4 = try #require(UTCTime(year: 2026, month: 1, day: 4, hour: 12, minute: 0, second: 0, millisecond: 0))
        #expect(dec29.isoWeekStart == jan4.isoWeekStart)
        #expect(dec29.monthNumber + 1 == jan4.monthNumber)
        #expect(UTCTime(year: 2026, month: 2, day: 29, hour: 0, minute: 0, second: 0, millisecond: 0) == nil)
        #expect(UTCTime(year: 2024, month: 2, day: 29, hour: 0, minute: 0, second: 0, millisecond: 0) != nil)
    }
}
