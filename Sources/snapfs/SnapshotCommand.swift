import ArgumentParser
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Flush a snapfs mount and take a snapshot now.",
        discussion: """
        Prints the new snapshot's name once it is published (with --no-wait: once its moment is fixed). Without --force, when nothing changed since the newest snapshot, no snapshot is made and `unchanged since NAME` goes to stderr (exit 0). The mount's retention rules are applied afterwards.

        \(ExitStatus.help)
        """
    )

    @Argument(help: "The mountpoint of a snapfs mount.")
    var mountpoint: String

    @Option(name: .long, help: "A label appended to the name (1-64 bytes; no '/', whitespace or control characters; not starting with '.' or '-').")
    var label: String?

    @Flag(name: .long, help: "Take a snapshot even if nothing changed since the newest one.")
    var force = false

    @Flag(name: .long, help: "Print the name once the snapshot's moment is fixed, while its tree is still being built (it appears when built).")
    var noWait = false

    func run() throws {
        if let label {
            do {
                try SnapshotName.validateLabel(label)
            } catch {
                // The core's reason is a sentence of its own; after a colon it starts in lower case.
                let reason = error.message.prefix(1).lowercased() + error.message.dropFirst()
                throw CLIFailure("bad label \(Self.quoted(label)): \(reason)", code: ExitStatus.usage)
            }
        }
        let mount = try MountedSnapshots(mountpoint)
        let command = ["snapshot", "--trigger=command"] + (force ? ["--force"] : []) + (noWait ? ["--no-wait"] : [])
            + (label.map { [$0] } ?? [])
        let words = try mount.control.run(command.joined(separator: " "), what: "the snapshot", action: "take snapshots")
        switch (words.first, words.dropFirst().first) {
        case ("snapshot", let name?), ("started", let name?):
            print(name)
        case ("unchanged", let name?):
            FileHandleStandardError.write("unchanged since \(name)\n")
        default:
            throw CLIFailure("the snapshot gave an unexpected answer \"ok \(words.joined(separator: " "))\"", code: ExitStatus.daemonFailed)
        }
    }

    /// `label` in double quotes with control characters escaped, so that the error stays one
    /// line on the terminal.
    static func quoted(_ label: String) -> String {
        var text = "\""
        for scalar in label.unicodeScalars {
            switch scalar {
            case "\n": text += "\\n"
            case "\t": text += "\\t"
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            default:
                if scalar.properties.generalCategory == .control {
                    let hex = String(scalar.value, radix: 16)
                    text += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else {
                    text.unicodeScalars.append(scalar)
                }
            }
        }
        return text + "\""
    }
}
