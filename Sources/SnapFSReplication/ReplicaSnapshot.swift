import FoundationEssentials
import SnapFSSnapshots

/// A restic snapshot in a repository, as `restic snapshots --json` describes it, with what
/// its snapfs tags say.
///
/// Each snapfs snapshot becomes one restic snapshot with these tags (docs/replication.md):
/// `snapfs`, `snapfs-name=NAME`, `snapfs-trigger=KIND`, `snapfs-scope=tree|files`, and when
/// they apply `snapfs-label=LABEL`, `snapfs-database=PATH`, `snapfs-held`. A tag value is
/// percent-encoded where restic would split or mangle it (`,`, `%`, spaces, control bytes
/// and bytes outside ASCII).
public struct ReplicaSnapshot: Codable, Sendable, Equatable {
    /// restic's snapshot ID (64 hex digits).
    public var id: String
    public var shortID: String
    /// restic's time of the snapshot (RFC 3339).
    public var time: String
    public var hostname: String
    /// The directory restic was given: `BACKING/.snapshots/NAME`.
    public var paths: [String]
    public var tags: [String]
    public var parent: String?

    private enum CodingKeys: String, CodingKey {
        case id, shortID = "short_id", time, hostname, paths, tags, parent
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        shortID = try c.decodeIfPresent(String.self, forKey: .shortID) ?? String(id.prefix(8))
        time = try c.decodeIfPresent(String.self, forKey: .time) ?? ""
        hostname = try c.decodeIfPresent(String.self, forKey: .hostname) ?? ""
        paths = try c.decodeIfPresent([String].self, forKey: .paths) ?? []
        tags = try c.decodeIfPresent([String].self, forKey: .tags) ?? []
        parent = try c.decodeIfPresent(String.self, forKey: .parent)
    }

    public init(id: String, time: String = "", hostname: String = "", paths: [String] = [], tags: [String], parent: String? = nil) {
        self.id = id
        shortID = String(id.prefix(8))
        self.time = time
        self.hostname = hostname
        self.paths = paths
        self.tags = tags
        self.parent = parent
    }

    /// Decodes the output of `restic snapshots --json`; nil if it is not such a list.
    public static func decodeList(_ bytes: [UInt8]) -> [ReplicaSnapshot]? {
        // restic prints `null` for an empty repository.
        let text = bytes.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") }
        if text.starts(with: Array("null".utf8)) { return [] }
        return try? JSONDecoder().decode([ReplicaSnapshot].self, from: Data(bytes))
    }

    // MARK: What the tags say

    public static let baseTag = "snapfs"

    /// The value of the tag `snapfs-KEY=VALUE`, decoded, or nil.
    public func tag(_ key: String) -> String? {
        let prefix = Self.baseTag + "-" + key + "="
        guard let tag = tags.first(where: { $0.hasPrefix(prefix) }) else { return nil }
        return TagText.decode(String(tag.dropFirst(prefix.count)))
    }

    /// The snapfs snapshot's name, or nil for a restic snapshot snapfs did not make.
    public var name: SnapshotName? { tag("name").flatMap(SnapshotName.init(parsing:)) }
    public var triggerKind: String? { tag("trigger") }
    public var label: String? { tag("label") }
    public var database: String? { tag("database") }
    public var scope: SnapshotMetadata.Scope { tag("scope").flatMap(SnapshotMetadata.Scope.init(rawValue:)) ?? .tree }
    public var held: Bool { tags.contains(Self.baseTag + "-held") }

    /// The tags for the snapfs snapshot `metadata`.
    public static func tags(for metadata: SnapshotMetadata) -> [String] {
        var tags = [baseTag, "\(baseTag)-name=\(TagText.encode(metadata.name))",
                    "\(baseTag)-trigger=\(metadata.trigger.kind.rawValue)",
                    "\(baseTag)-scope=\(metadata.scope.rawValue)"]
        if let label = metadata.label { tags.append("\(baseTag)-label=\(TagText.encode(label))") }
        if let sqlite = metadata.sqlite { tags.append("\(baseTag)-database=\(TagText.encode(sqlite.database))") }
        if metadata.held { tags.append("\(baseTag)-held") }
        return tags
    }
}

/// Tag values as restic keeps them: one `--tag` argument is split at commas, so `,` and `%`
/// (and anything that is not printable ASCII) are written `%HH`.
public enum TagText {
    public static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte > 0x20 && byte < 0x7f && byte != UInt8(ascii: ",") && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    /// The text `encode` wrote; a `%` not followed by two hex digits stays as it is.
    public static func decode(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var index = 0
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
               let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
