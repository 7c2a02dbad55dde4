/// One `key: value` line of a mount's status (the control file, `snapfs status`): the
/// one reading of that text, for the commands and for the metrics.
public enum StatusLine {
    /// The key (up to the first colon) and the value (after it, less leading spaces);
    /// nil for a line with no colon.
    public static func split<Line: StringProtocol>(_ line: Line) -> (key: String, value: String)? {
        guard let colon = line.firstIndex(of: ":") else { return nil }
        return (String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " }))
    }
}
