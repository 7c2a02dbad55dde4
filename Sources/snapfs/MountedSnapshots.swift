import Glibc
import SnapFSBacking
import SnapFSCore
import SnapFSDaemon
import SnapFSSnapshots
import SystemPackage

/// A snapfs mount seen from the command line: its control file, its `.snapshots`, and the
/// translation of user paths into paths relative to its root.
struct MountedSnapshots {
    /// Names at the root of a mount that are not part of the live tree.
    static let reservedNames = [SnapshotCatalog.directoryName, ControlClient.fileName, ".snapfs-work"]

    /// The mountpoint as given (without trailing slashes).
    let mountpoint: String
    /// Its canonical path.
    let canonical: String

    /// The mount at `path`; throws "not a snapfs mount" (17) if it has no control file.
    init(_ path: String) throws(CLIFailure) {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard ControlClient.exists(at: trimmed), let canonical = MountPlan.canonical(trimmed) else {
            throw CLIFailure.notSnapfsMount(path)
        }
        mountpoint = trimmed
        self.canonical = canonical
    }

    var control: ControlClient { ControlClient(mountpoint: canonical) }

    var snapshotsPath: String { canonical + "/" + SnapshotCatalog.directoryName }

    func snapshotPath(_ name: String) -> String { snapshotsPath + "/" + name }

    func catalog() throws(CLIFailure) -> SnapshotCatalog {
        do {
            return try SnapshotCatalog(path: snapshotsPath)
        } catch {
            throw CLIFailure("cannot read \(snapshotsPath): \(error)", code: ExitStatus.daemonFailed)
        }
    }

    func list() throws(CLIFailure) -> [SnapshotEntry] {
        let catalog = try catalog()
        do {
            return try catalog.list()
        } catch {
            throw CLIFailure("cannot list \(snapshotsPath): \(error)", code: ExitStatus.daemonFailed)
        }
    }

    /// The snapshot called `name`; throws "unknown snapshot" (20) if there is none.
    func snapshot(_ name: String) throws(CLIFailure) -> SnapshotEntry {
        guard let entry = try catalog().find(name) else {
            throw CLIFailure("there is no snapshot named \(name) in \(mountpoint)", code: ExitStatus.unknownSnapshot)
        }
        return entry
    }

    /// The paths that all of `snapshots` hold: nil when one of them is of the whole tree
    /// (scope "tree") and the others too, else the paths common to the "files" ones.
    static func commonPaths(_ snapshots: [SnapshotEntry]) -> [String]? {
        var common: Set<String>?
        for entry in snapshots {
            guard let metadata = entry.metadata, metadata.scope == .files else { continue }
            let paths = Set(metadata.paths)
            common = common.map { $0.intersection(paths) } ?? paths
        }
        return common.map { $0.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) } }
    }

    /// `path` (absolute inside the mount, or relative to its root) as a path relative to the
    /// root of the live tree, `""` for the root itself. Throws 21 for a path outside the mount
    /// or inside `.snapshots`.
    func relativePath(_ path: String) throws(CLIFailure) -> String {
        String(decoding: try relativePath(bytes: Array(path.utf8), shown: path), as: UTF8.self)
    }

    /// The same for a path given as raw bytes (see ``RawArguments``); `shown` names it in errors.
    func relativePath(bytes path: [UInt8], shown: String) throws(CLIFailure) -> [UInt8] {
        let slash = UInt8(ascii: "/")
        var components: [[UInt8]]
        if path.first == slash {
            let normalized = Self.normalize(path.split(separator: slash).map(Array.init))
            var relative: [[UInt8]]?
            for root in [canonical, absolutePath(mountpoint)] {
                let rootComponents = Self.normalize(Array(root.utf8).split(separator: slash).map(Array.init))
                if normalized.starts(with: rootComponents) {
                    relative = Array(normalized.dropFirst(rootComponents.count))
                    break
                }
            }
            guard let relative else {
                throw CLIFailure("\(shown) is outside the mount \(mountpoint)", code: ExitStatus.badPath)
            }
            components = relative
        } else {
            components = Self.normalize(path.split(separator: slash).map(Array.init))
            if components.first == Array("..".utf8) {
                throw CLIFailure("\(shown) is outside the mount \(mountpoint)", code: ExitStatus.badPath)
            }
        }
        if let first = components.first, Self.reservedNames.contains(where: { Array($0.utf8) == first }) {
            throw CLIFailure("\(shown) is not in the live tree of \(mountpoint) (\(PathText.escaped(first)) is reserved to snapfs)", code: ExitStatus.badPath)
        }
        return Array(components.joined(separator: [slash]))
    }

    /// Removes `.` and resolves `..` lexically; a leading `..` that cannot be resolved stays.
    static func normalize(_ components: [[UInt8]]) -> [[UInt8]] {
        let dot = Array(".".utf8), dotDot = Array("..".utf8)
        var result: [[UInt8]] = []
        for component in components where component != dot && !component.isEmpty {
            if component == dotDot, let last = result.last, last != dotDot {
                result.removeLast()
            } else {
                result.append(component)
            }
        }
        return result
    }
}

/// Formatting shared by the commands' output.
enum Format {
    /// `512 B`, `1.5 KiB`, `12.0 MiB`.
    static func size(_ bytes: Int64) -> String {
        if bytes < 1024 { return "\(bytes) B" }
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    /// `2026-11-25 11:22:33Z`.
    static func time(ms: Int64) -> String {
        guard let time = UTCTime(milliseconds: ms) else { return "?" }
        return time.readable + "Z"
    }

    /// Columns padded to their widest cell, two spaces apart.
    static func table(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        var text = ""
        for row in rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                line += cell
                if index < row.count - 1 { line += String(repeating: " ", count: widths[index] - cell.count + 2) }
            }
            text += line + "\n"
        }
        return text
    }
}
