import ArgumentParser
import Glibc
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Flush a snapfs mount and take a snapshot now, or a pair of snapshots around a command.",
        discussion: """
        Prints the new snapshot's name once it is published (with --no-wait: once its moment is fixed). Without --force, when nothing changed since the newest snapshot, no snapshot is made and `unchanged since NAME` goes to stderr (exit 0). The mount's retention rules are applied afterwards.

        snapfs snapshot MOUNT [--label L] -- COMMAND [ARGS...]: a pre/post pair, as snapper's. Takes a snapshot (forced), runs COMMAND as the calling user with the caller's environment and terminal, then takes a second snapshot (forced, also when COMMAND failed or was killed). Both carry the label L and a "pair" in their metadata (role pre or post, and the pre's and post's names); `pre snapshot: NAME` and `post snapshot: NAME` go to stderr. The exit code is COMMAND's (128 + N when signal N killed it, 127 when it was not found, 126 when it could not be run); when the pre snapshot fails COMMAND is not run, and when the post snapshot fails the exit code is 22. snapfs diff MOUNT --pair L shows what COMMAND changed.

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

    @Argument(parsing: .postTerminator,
              help: ArgumentHelp("After --: a command to run between a pre and a post snapshot (a pair).", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        if !command.isEmpty && noWait {
            throw ValidationError("--no-wait cannot be used with a command: the post snapshot is taken once the command ends, and each snapshot of a pair is waited for")
        }
    }

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
        if !command.isEmpty { return try runPair(mount) }
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

    /// A pre snapshot, the command, a post snapshot: see the discussion above.
    private func runPair(_ mount: MountedSnapshots) throws {
        let pre = try takePaired(mount, pair: SnapshotPair(role: .pre), what: "the pre snapshot")
        FileHandleStandardError.write("pre snapshot: \(pre)\n")
        let (ending, taken) = ForegroundCommand.ignoringInterrupts { () -> (ForegroundCommand.Ending, Result<String, CLIFailure>) in
            let ending = ForegroundCommand(arguments: command).run()
            let taken = Result { () throws(CLIFailure) in
                try takePaired(mount, pair: SnapshotPair(role: .post, pre: pre), what: "the post snapshot")
            }
            return (ending, taken)
        }
        let shown = Self.quoted(command[0])
        let outcome = switch ending {
        case .exited(let status): "the command exited with \(status)"
        case .killed(let signal): "the command was killed by \(ForegroundCommand.signalName(signal))"
        case .notStarted(let error): "the command \(shown) could not be run (\(String(cString: strerror(error))))"
        }
        let post: String
        switch taken {
        case .success(let name): post = name
        case .failure(let error):
            throw CLIFailure("\(outcome), but \(error.message) (the pre snapshot is \(pre))", code: ExitStatus.daemonFailed)
        }
        FileHandleStandardError.write("post snapshot: \(post)\n")
        switch ending {
        case .exited(let status):
            if status != 0 { throw ExitCode(status) }
        case .killed, .notStarted:
            // The command said nothing about it: snapfs does, in one line as its errors.
            throw CLIFailure(outcome, code: ending.exitCode)
        }
    }

    /// Takes one snapshot of a pair (forced, so that the pair always exists) and returns its
    /// name.
    private func takePaired(_ mount: MountedSnapshots, pair: SnapshotPair, what: String) throws(CLIFailure) -> String {
        let request = ["snapshot", "--trigger=command", "--force", "--pair=\(pair.argument)"] + (label.map { [$0] } ?? [])
        let words = try mount.control.run(request.joined(separator: " "), what: what, action: "take snapshots")
        guard words.first == "snapshot", let name = words.dropFirst().first else {
            throw CLIFailure("\(what) gave an unexpected answer \"ok \(words.joined(separator: " "))\"", code: ExitStatus.daemonFailed)
        }
        return String(name)
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
