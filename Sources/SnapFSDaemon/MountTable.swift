import CLinux
/// The mounts listed in `/proc/self/mountinfo`.
public struct MountTable: Sendable {
    public struct Record: Sendable, Equatable {
        public let mountpoint: String
        public let fileSystemType: String
        public let source: String
        /// The filesystem's options (for FUSE: `rw,user_id=0,group_id=0,allow_other`).
        public var superOptions: String = ""
    }

    public let records: [Record]

    public init(_ text: String) {
        records = text.split(separator: "\n").compactMap(Self.parse)
    }

    /// One line: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS`.
    static func parse(_ line: Substring) -> Record? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { return nil }
        return Record(mountpoint: unescape(fields[4]), fileSystemType: String(fields[dash + 1]),
                      source: unescape(fields[dash + 2]),
                      superOptions: dash + 3 < fields.count ? String(fields[dash + 3]) : "")
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var index = 0
        while index < utf8.count {
            if utf8[index] == 0x5C, index + 3 < utf8.count,
               let value = UInt8(String(decoding: utf8[(index + 1)...(index + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func contains(mountpoint: String) -> Bool {
        records.contains { $0.mountpoint == mountpoint }
    }

    /// The last (topmost) mount at `mountpoint`.
    public func record(at mountpoint: String) -> Record? {
        records.last { $0.mountpoint == mountpoint }
    }
}
