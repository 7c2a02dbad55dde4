import Glibc

/// A moment broken down into UTC calendar fields, at millisecond precision.
///
/// Snapshot names, metadata times and retention periods are all in UTC, so that they
/// neither depend on the machine's time zone nor jump at daylight-saving changes.
public struct UTCTime: Equatable, Sendable {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public let milliseconds: Int64
    public let year: Int
    /// 1...12
    public let month: Int
    /// 1...31
    public let day: Int
    public let hour: Int
    public let minute: Int
    public let second: Int
    public let millisecond: Int

    /// The latest time whose year still has four digits (9999-12-31T23:59:59.999Z), the
    /// last one a snapshot name can carry.
    public static let latestMilliseconds: Int64 = 253_402_300_799_999

    /// Breaks `milliseconds` down; times before 1970 or after the year 9999 are outside the
    /// range of snapshot names and give nil.
    public init?(milliseconds: Int64) {
        guard milliseconds >= 0, milliseconds <= Self.latestMilliseconds else { return nil }
        var seconds = time_t(milliseconds / 1000)
        var fields = tm()
        guard gmtime_r(&seconds, &fields) != nil else { return nil }
        self.milliseconds = milliseconds
        year = Int(fields.tm_year) + 1900
        month = Int(fields.tm_mon) + 1
        day = Int(fields.tm_mday)
        hour = Int(fields.tm_hour)
        minute = Int(fields.tm_min)
        second = Int(fields.tm_sec)
        millisecond = Int(milliseconds % 1000)
    }

    /// The time of the given UTC fields, or nil if they do not name a real moment in
    /// 1970...9999 (month 13, February 30, second 60, ...).
    public init?(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, millisecond: Int) {
        guard (1970...9999).contains(year), (1...12).contains(month), (1...31).contains(day),
              (0...23).contains(hour), (0...59).contains(minute), (0...59).contains(second),
              (0...999).contains(millisecond) else { return nil }
        var fields = tm()
        fields.tm_year = Int32(year - 1900)
        fields.tm_mon = Int32(month - 1)
        fields.tm_mday = Int32(day)
        fields.tm_hour = Int32(hour)
        fields.tm_min = Int32(minute)
        fields.tm_sec = Int32(second)
        let seconds = timegm(&fields)
        // timegm normalises February 30 to March 2; a real date survives the round trip.
        guard let time = UTCTime(milliseconds: Int64(seconds) * 1000 + Int64(millisecond)),
              time.year == year, time.month == month, time.day == day else { return nil }
        self = time
    }

    /// Days since 1970-01-01 (UTC).
    public var dayNumber: Int64 { milliseconds / 86_400_000 }

    /// Hours since 1970-01-01T00Z.
    public var hourNumber: Int64 { milliseconds / 3_600_000 }

    /// The day number of the Monday that starts this time's ISO 8601 week; two times are in
    /// the same ISO week exactly when these are equal.
    public var isoWeekStart: Int64 {
        // 1970-01-01 was a Thursday: Monday-based weekday index 3.
        let weekday = (dayNumber + 3) % 7
        return dayNumber - weekday
    }

    /// Months since January of the year 0; equal for times in the same calendar month.
    public var monthNumber: Int { year * 12 + (month - 1) }

    /// `2026-11-25T11:22:33.456Z` (ISO 8601, as in snapshot metadata).
    public var iso8601: String {
        "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2)).\(pad(millisecond, 3))Z"
    }

    /// `20261125T112233.456Z` (the time part of a snapshot name).
    public var compact: String {
        "\(pad(year, 4))\(pad(month, 2))\(pad(day, 2))T\(pad(hour, 2))\(pad(minute, 2))\(pad(second, 2)).\(pad(millisecond, 3))Z"
    }

    /// `@GMT-2026.11.25-11.22.33`: the token by which SMB names a previous version, to the
    /// second (see ``PreviousVersions``).
    public var gmtToken: String {
        "@GMT-\(pad(year, 4)).\(pad(month, 2)).\(pad(day, 2))-\(pad(hour, 2)).\(pad(minute, 2)).\(pad(second, 2))"
    }

    /// `2026-11-25 11:22:33` (for tables read by people).
    public var readable: String {
        "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2)) \(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
    }
}

private func pad(_ value: Int, _ width: Int) -> String {
    let digits = String(value)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}

extension UTCTime {
    /// The unsigned decimal number written in `digits` (ASCII), or nil if any byte is not a
    /// digit: the fields of snapshot names and SMB tokens.
    static func decimal(_ digits: ArraySlice<UInt8>) -> Int? {
        var value = 0
        for byte in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }
}
