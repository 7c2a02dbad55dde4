import SnapFSSnapshots

/// What `--json` prints (the schemas are in docs/options.md), written through ``JSONText``.
enum JSONOutput {
    static func print<T: Encodable>(_ value: T) {
        Swift.print(String(decoding: JSONText.encode(value), as: UTF8.self), terminator: "")
    }

    /// A JSON value of `status`: a whole number, or a string.
    enum Value: Encodable {
        case number(Int64)
        case string(String)

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .number(let n): try container.encode(n)
            case .string(let s): try container.encode(s)
            }
        }
    }

    /// An object with the given keys, in JSON's sorted order.
    struct Object: Encodable {
        let pairs: [(String, Value)]

        init(_ pairs: [(String, Value)]) { self.pairs = pairs }

        struct Key: CodingKey {
            let stringValue: String
            init(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            for (key, value) in pairs { try container.encode(value, forKey: Key(stringValue: key)) }
        }
    }

    /// One line of `diff`.
    struct Change: Encodable {
        let change: String
        let path: String

        init(_ difference: TreeDiff.Difference) {
            switch difference.change {
            case .added: change = "added"
            case .deleted: change = "deleted"
            case .modified: change = "modified"
            case .typeChanged: change = "type"
            }
            path = PathText.escaped(difference.path)
        }
    }

    /// One version of `versions`.
    struct Version: Encodable {
        let type: String
        let size: Int64
        let modified: Int64
        let snapshots: [String]
    }
}
