import Glibc
import SnapFSBacking

/// Why a label or a snapshot name was refused, as one sentence for the user.
public struct SnapshotNameError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// The name of a snapshot: `YYYYMMDDTHHMMSS.mmmZ` in UTC, optionally followed by `-LABEL`,
/// for example `20261125T112233.456Z-nightly`.
///
/// The time part has a fixed width, so the byte order of names is the order of their times;
/// ``Comparable`` follows that byte order.
public struct SnapshotName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Milliseconds since the epoch (UTC).
    public let timeMs: Int64
    /// The label, if one was given.
    public let label: String?
    /// The name as it appears in `.snapshots/`.
    public let description: String

    /// The longest label, in UTF-8 bytes.
    public static let maximumLabelBytes = 64

    /// A name for a snapshot taken at `timeMs`. Throws if the label breaks a rule of
    /// ``validateLabel(_:)`` or the time is before 1970 or after the year 9999.
    public init(timeMs: Int64, label: String? = nil) throws(SnapshotNameError) {
        if let label { try Self.validateLabel(label) }
        guard let time = UTCTime(milliseconds: timeMs) else {
            throw SnapshotNameError("The time \(timeMs) ms is outside the years 1970 to 9999.")
        }
        self.timeMs = timeMs
        self.label = label
        description = time.compact + (label.map { "-" + $0 } ?? "")
    }

    /// Parses a name of the form `YYYYMMDDTHHMMSS.mmmZ[-LABEL]` with a valid date and label;
    /// anything else (stray files in `.snapshots`, `.building-…`, `.meta`) gives nil.
    public init?(parsing name: String) {
        let bytes = Array(name.utf8)
        // "YYYYMMDDTHHMMSS.mmmZ" is 20 bytes.
        guard bytes.count >= 20, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "."),
              bytes[19] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? { UTCTime.decimal(bytes[range]) }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
              let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
              let millisecond = number(16..<19),
              let time = UTCTime(year: year, month: month, day: day, hour: hour, minute: minute,
                                 second: second, millisecond: millisecond) else { return nil }
        var label: String?
        if bytes.count > 20 {
            guard bytes[20] == UInt8(ascii: "-") else { return nil }
            label = String(decoding: bytes[21...], as: UTF8.self)
        }
        guard let parsed = try? SnapshotName(timeMs: time.milliseconds, label: label),
              parsed.description.utf8.elementsEqual(name.utf8) else { return nil }
        self = parsed
    }

    /// The time broken down in UTC.
    public var time: UTCTime { UTCTime(milliseconds: timeMs)! }

    /// A name for a new snapshot that sorts strictly after `newest`: the clock's time
    /// `nowMs`, or `newest` + 1 ms when the clock gives the same or an earlier millisecond
    /// (two snapshots in one millisecond, or a clock that stepped back).
    public static func next(after newest: SnapshotName?, nowMs: Int64, label: String? = nil) throws(SnapshotNameError) -> SnapshotName {
        var time = nowMs
        if let newest, time <= newest.timeMs { time = newest.timeMs + 1 }
        return try SnapshotName(timeMs: time, label: label)
    }

    /// Checks a label against the rules: 1 to 64 bytes of UTF-8, no `/`, no whitespace, no
    /// control characters, not starting with `.` or `-`. Throws the first rule broken, as one
    /// sentence.
    public static func validateLabel(_ label: String) throws(SnapshotNameError) {
        let bytes = label.utf8
        if bytes.isEmpty { throw SnapshotNameError("A snapshot label must not be empty.") }
        if bytes.count > maximumLabelBytes {
            throw SnapshotNameError("A snapshot label must be at most \(maximumLabelBytes) bytes long (this one has \(bytes.count)).")
        }
        // A String from argv or a directory entry has invalid UTF-8 repaired to U+FFFD;
        // refuse it rather than store a name that differs from what the user typed.
        if label.unicodeScalars.contains("\u{FFFD}") {
            throw SnapshotNameError("A snapshot label must be valid UTF-8.")
        }
        if bytes.contains(UInt8(ascii: "/")) { throw SnapshotNameError("A snapshot label must not contain '/'.") }
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7f }) || label.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw SnapshotNameError("A snapshot label must not contain control characters.")
        }
        if label.unicodeScalars.contains(where: { $0.properties.isWhitespace }) {
            throw SnapshotNameError("A snapshot label must not contain whitespace.")
        }
        if bytes.first == UInt8(ascii: ".") { throw SnapshotNameError("A snapshot label must not start with '.'.") }
        if bytes.first == UInt8(ascii: "-") { throw SnapshotNameError("A snapshot label must not start with '-'.") }
    }

    /// The current time in milliseconds since the epoch (CLOCK_REALTIME).
    public static func nowMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public static func < (a: SnapshotName, b: SnapshotName) -> Bool {
        a.description.utf8.lexicographicallyPrecedes(b.description.utf8)
    }

    // Bytes, not String's Unicode-equivalence: two names are the same directory entry only
    // if their bytes are equal.
    public static func == (a: SnapshotName, b: SnapshotName) -> Bool {
        a.description.utf8.elementsEqual(b.description.utf8)
    }

    public func hash(into hasher: inout Hasher) {
        for byte in description.utf8 { hasher.combine(byte) }
    }
}
