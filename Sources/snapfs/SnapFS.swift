import ArgumentParser
import Glibc
import SnapFSDaemon

/// The `snapfs` command. With no subcommand it mounts, so that `mount -t fuse.snapfs`
/// (which runs `snapfs BACKING MOUNTPOINT -o OPTIONS`) works from /etc/fstab.
@main
struct SnapFS: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "snapfs",
        abstract: "A FUSE filesystem that snapshots a directory at every point where its data is consistent.",
        version: version,
        subcommands: [MountCommand.self, UnmountCommand.self,
                      SnapshotCommand.self, ListCommand.self, DiffCommand.self, VersionsCommand.self,
                      RestoreCommand.self, ReplicateCommand.self, PruneCommand.self, DeleteCommand.self, HoldCommand.self,
                      ReleaseCommand.self, StatusCommand.self],
        defaultSubcommand: MountCommand.self
    )

    /// Like ArgumentParser's own `main`, except that a usage error is one `snapfs:` line on
    /// stderr and exit code 64, as every other error of the CLI.
    static func main() {
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success || error is ExitCode { exit(withError: error) }
            let text = message(for: error)
                .split(separator: "\n").map { $0.trimmingCharacters(in: " ") }
                .filter { !$0.isEmpty && !$0.hasPrefix("Usage:") && !$0.hasPrefix("See '") && !$0.hasPrefix("Help:") }
                .joined(separator: "; ")
            FileHandleStandardError.write("snapfs: \(text) (see snapfs --help)\n")
            Glibc.exit(ExitStatus.usage)
        }
        do {
            var command = command
            try command.run()
        } catch let failure as CLIFailure {
            FileHandleStandardError.write("snapfs: \(failure.message)\n")
            Glibc.exit(failure.code)
        } catch {
            exit(withError: error)
        }
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> Substring {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return s
    }
}

typealias CLIFailure = CommandFailure

extension ParsableCommand {
    /// Prints `snapfs: MESSAGE` on stderr and exits with `code`.
    func fail(_ message: String, code: Int32) -> Never {
        FileHandleStandardError.write("snapfs: \(message)\n")
        Self.exit(withError: ExitCode(code))
    }
}
