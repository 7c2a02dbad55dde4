import SnapFSSnapshots
/// A command written to the control file (`MOUNT/.snapfs-control`), one per `write()`:
///
///     snapshot [--force] [--no-wait] [--trigger=KIND[:DETAIL]] [--pair=pre|post:PRE] [LABEL]
///     prune
///     delete NAME | hold NAME | release NAME
///     flush       (write every cached change back to the backing directory)
///
/// A trailing newline is ignored, so `echo snapshot nightly > MOUNT/.snapfs-control` works.
public enum ControlCommand: Equatable, Sendable {
    /// `wait` false (`--no-wait`): answer once the snapshot's moment is fixed, while its
    /// tree is still being built, instead of once it is published.
    case snapshot(label: String?, force: Bool, trigger: Trigger, wait: Bool = true)
    case prune
    case delete(name: String)
    case hold(name: String)
    case release(name: String)
    case flush

    /// Why a command was refused, in one sentence.
    public struct ParseError: Error, Equatable, Sendable {
        public let message: String
    }

    /// Parses the bytes of one write.
    public static func parse(_ bytes: some Collection<UInt8>) throws(ParseError) -> ControlCommand {
        guard bytes.count <= 4096 else { throw ParseError(message: "command longer than 4096 bytes") }
        guard let text = String(validating: Array(bytes), as: UTF8.self) else {
            throw ParseError(message: "command is not UTF-8 text")
        }
        var line = Substring(text)
        while let last = line.last, last == "\n" || last == "\r" || last == "\r\n" { line = line.dropLast() }
        if line.contains("\n") { throw ParseError(message: "one command per write, on one line") }
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let verb = words.first else { throw ParseError(message: "empty command (try: snapshot [LABEL])") }
        let arguments = Array(words.dropFirst())
        switch verb {
        case "snapshot":
            var force = false
            var wait = true
            var trigger = Trigger(kind: .control)
            var label: String?
            var pair: SnapshotPair?
            for argument in arguments {
                if argument == "--force" {
                    force = true
                } else if argument == "--no-wait" {
                    wait = false
                } else if argument.hasPrefix("--trigger=") {
                    trigger = try parseTrigger(String(argument.dropFirst("--trigger=".count)))
                } else if argument.hasPrefix("--pair=") {
                    // The pre or post snapshot of a pair (`snapfs snapshot --label L -- COMMAND`).
                    guard let parsed = SnapshotPair(argument: String(argument.dropFirst("--pair=".count))) else {
                        throw ParseError(message: "--pair is pre, or post:NAME naming the pre snapshot")
                    }
                    pair = parsed
                } else if argument.hasPrefix("--") {
                    throw ParseError(message: "unknown option \(argument) for snapshot")
                } else if label == nil {
                    label = argument
                } else {
                    throw ParseError(message: "a label is one word without spaces")
                }
            }
            if let label {
                do {
                    try SnapshotName.validateLabel(label)
                } catch {
                    throw ParseError(message: error.message)
                }
            }
            trigger.pair = pair
            return .snapshot(label: label, force: force, trigger: trigger, wait: wait)
        case "prune", "flush":
            guard arguments.isEmpty else { throw ParseError(message: "\(verb) takes no arguments") }
            return verb == "prune" ? .prune : .flush
        case "delete", "hold", "release":
            guard arguments.count == 1 else { throw ParseError(message: "\(verb) takes one snapshot name") }
            let name = arguments[0]
            switch verb {
            case "delete": return .delete(name: name)
            case "hold": return .hold(name: name)
            default: return .release(name: name)
            }
        default:
            throw ParseError(message: "unknown command \(verb) (known: snapshot, prune, delete, hold, release, flush)")
        }
    }

    private static func parseTrigger(_ text: String) throws(ParseError) -> Trigger {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let kind = Trigger.Kind(rawValue: String(parts[0])) else {
            throw ParseError(message: "unknown trigger kind \(parts[0])")
        }
        return Trigger(kind: kind, detail: parts.count > 1 ? String(parts[1]) : nil)
    }
}
