import Glibc
@testable import SnapFSBacking
import SnapFSCore
@testable import SnapFSSnapshots
import Testing

/// A small XFS (reflink=1) or btrfs filesystem on a loop device, mounted in a temporary
/// directory, for the reflink and btrfs tests. `unmount()` undoes everything.
struct LoopFilesystem {
    enum Kind: String { case xfs, btrfs }

    let kind: Kind
    let image: String
    let device: String
    let mountPoint: String

    /// Whether the loop filesystem must be there: on CI a failed set-up fails the test.
    static var required: Bool { getenv("CI").map { String(cString: $0) == "true" } ?? false }

    /// Makes and mounts the filesystem, or returns nil after recording an issue when the
    /// set-up fails where it must not (CI, or as root); without root on a developer machine
    /// the test is skipped quietly.
    static func make(_ kind: Kind, megabytes: Int = 512, sourceLocation: SourceLocation = #_sourceLocation) -> LoopFilesystem? {
        do {
            return try LoopFilesystem(kind, megabytes: megabytes)
        } catch {
            if required || geteuid() == 0 {
                Issue.record("could not set up a loop \(kind.rawValue) filesystem: \(error.message)", sourceLocation: sourceLocation)
            } else {
                print("skipped: a loop \(kind.rawValue) filesystem needs root (\(error.message))")
            }
            return nil
        }
    }

    struct SetupError: Error { let message: String }

    private init(_ kind: Kind, megabytes: Int) throws(SetupError) {
        self.kind = kind
        var template = Array("/tmp/snapfs-loop-XXXXXX".utf8CString)
        let base = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        image = base + "/image"
        mountPoint = base + "/mnt"
        mkdir(mountPoint, 0o755)
        let (created, _) = Self.shell("truncate -s \(megabytes)M '\(image)'")
        guard created == 0 else { _ = Self.shell("rm -rf '\(base)'"); throw SetupError(message: "truncate failed") }
        let (attached, output) = Self.shell("losetup -f --show '\(image)'")
        guard attached == 0, output.hasPrefix("/dev/") else {
            _ = Self.shell("rm -rf '\(base)'")
            throw SetupError(message: "losetup failed: \(output)")
        }
        device = output
        let mkfs = kind == .xfs ? "mkfs.xfs -q -f -m reflink=1" : "mkfs.btrfs -q -f"
        let (made, mkfsOutput) = Self.shell("\(mkfs) '\(device)' 2>&1")
        let (mounted, mountOutput) = made == 0 ? Self.shell("mount '\(device)' '\(mountPoint)' 2>&1") : (1, "")
        guard made == 0, mounted == 0 else {
            _ = Self.shell("losetup -d '\(device)'; rm -rf '\(base)'")
            throw SetupError(message: "mkfs/mount failed: \(mkfsOutput) \(mountOutput)")
        }
    }

    func unmount() {
        let base = String(image.dropLast("/image".count))
        _ = Self.shell("umount '\(mountPoint)' || umount -l '\(mountPoint)'; losetup -d '\(device)'; rm -rf '\(base)'")
    }

    /// Runs `command` with sh; returns its status and its output without the final newline.
    @discardableResult
    static func shell(_ command: String) -> (Int32, String) {
        guard let pipe = popen(command, "r") else { return (-1, "") }
        let output = readToEnd(fileno(pipe))
        let status = pclose(pipe)
        var text = String(decoding: output, as: UTF8.self)
        while text.hasSuffix("\n") { text.removeLast() }
        return ((status >> 8) & 0xFF, text)
    }
}
