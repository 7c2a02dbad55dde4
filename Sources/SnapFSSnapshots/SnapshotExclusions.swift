import Glibc

/// Paths left out of tree snapshots (`--exclude GLOB`, `-o exclude=GLOB`), as btrbk and
/// rsnapshot users leave out caches and build output.
///
/// A pattern without `/` is matched (fnmatch(3), no flags) against the name of every entry
/// at any depth: `*.tmp`, `.cache`. A pattern with `/` is matched (`FNM_PATHNAME`: `*`, `?`
/// and `[…]` never match `/`) against the entry's path relative to the mount's root:
/// `build/cache`, `*/node_modules`; a leading `/` only anchors (`/build` is `build`). An
/// excluded directory is left out whole, never walked. Excluded entries are absent from the
/// snapshot. Database snapshots (commit snapshots of one database) are not affected.
///
/// Since `*` does not cross `/`, a path pattern with k slashes can only match a path with k
/// slashes: walks carry an entry's path only as deep as the deepest path pattern reaches,
/// and with no patterns do nothing per entry but look at one empty list.
public struct SnapshotExclusions: Sendable, Equatable, CustomStringConvertible {
    /// The patterns as given, in order.
    public let patterns: [String]
    /// Patterns without `/`, NUL-terminated.
    let namePatterns: [[CChar]]
    /// Patterns with `/` (a leading one dropped: `/build` matches the path `build`), NUL-terminated.
    let pathPatterns: [[CChar]]
    /// The most slashes in a path pattern: entries with more can match none.
    let deepestSlashes: Int

    /// At most this many patterns, each at most `maxLength` bytes: every entry of every
    /// snapshot is matched against them.
    public static let maxPatterns = 64
    public static let maxLength = 4096

    /// None: everything is in the snapshots.
    public static let none = SnapshotExclusions()

    private init() {
        patterns = []
        namePatterns = []
        pathPatterns = []
        deepestSlashes = -1
    }

    /// The patterns, or one sentence saying why they cannot be used.
    public static func parse(_ patterns: [String]) -> Result<SnapshotExclusions, ExclusionProblem> {
        if patterns.count > maxPatterns {
            return .failure(ExclusionProblem("\(patterns.count) exclude patterns: at most \(maxPatterns)"))
        }
        var names: [[CChar]] = []
        var paths: [[CChar]] = []
        var deepest = -1
        for pattern in patterns {
            if let problem = problem(with: pattern) { return .failure(ExclusionProblem(problem)) }
            var text = Substring(pattern)
            let anchored = text.first == "/"
            if anchored { text = text.dropFirst() }
            if anchored || text.contains("/") {
                paths.append(Array(String(text).utf8CString))
                deepest = max(deepest, text.utf8.count { $0 == 0x2F })
            } else {
                names.append(Array(String(text).utf8CString))
            }
        }
        return .success(SnapshotExclusions(patterns: patterns, names: names, paths: paths, deepest: deepest))
    }

    private init(patterns: [String], names: [[CChar]], paths: [[CChar]], deepest: Int) {
        self.patterns = patterns
        namePatterns = names
        pathPatterns = paths
        deepestSlashes = deepest
    }

    /// Why `pattern` is refused, or nil.
    private static func problem(with pattern: String) -> String? {
        let bytes = pattern.utf8.count
        if bytes == 0 { return "exclude= needs a glob (like *.tmp, .cache, build/cache)" }
        if bytes > maxLength { return "exclude pattern of \(bytes) bytes: at most \(maxLength)" }
        if pattern.utf8.contains(0) { return "exclude pattern \(pattern) holds a NUL byte" }
        let body = pattern.hasPrefix("/") ? Substring(pattern.dropFirst()) : Substring(pattern)
        if body.isEmpty { return "exclude pattern / would leave out the whole tree" }
        let components = body.split(separator: "/", omittingEmptySubsequences: false)
        if components.contains(where: \.isEmpty) {
            return "exclude pattern \(pattern) has an empty component (a trailing / or //)"
        }
        if components.contains(where: { $0 == "." || $0 == ".." }) {
            return "exclude pattern \(pattern) has a . or .. component, which no path in the tree has"
        }
        return nil
    }

    public var isEmpty: Bool { patterns.isEmpty }

    /// The patterns separated by spaces, for `status`; in each, `\` is written `\\` and a
    /// space `\x20`, so that ``init(statusValue:)`` reads them back exactly.
    public var description: String {
        patterns.map { pattern in
            var text = ""
            for character in pattern {
                switch character {
                case "\\": text += "\\\\"
                case " ": text += "\\x20"
                default: text.append(character)
                }
            }
            return text
        }.joined(separator: " ")
    }

    /// The patterns of a `status` line's value (``description``); nil if they are not valid.
    public init?(statusValue: String) {
        let patterns = statusValue.split(separator: " ").map { word in
            var text = ""
            var rest = Substring(word)
            while let character = rest.popFirst() {
                if character == "\\" && rest.first == "\\" {
                    rest.removeFirst()
                    text.append("\\")
                } else if character == "\\" && rest.hasPrefix("x20") {
                    rest.removeFirst(3)
                    text.append(" ")
                } else {
                    text.append(character)
                }
            }
            return text
        }
        guard case .success(let parsed) = Self.parse(patterns) else { return nil }
        self = parsed
    }

    /// Whether a walk needs the path of the directory whose entries have `slashes` slashes
    /// in their paths (0 at the top).
    func needsPath(forEntriesWithSlashes slashes: Int) -> Bool {
        slashes <= deepestSlashes
    }

    /// Whether the entry `name` of the directory at `directoryPath` (relative to the root,
    /// empty at the top; nil when beyond the reach of every path pattern) is excluded.
    func excludes(_ name: UnsafePointer<CChar>, in directoryPath: [UInt8]?) -> Bool {
        for pattern in namePatterns where fnmatch(pattern, name, 0) == 0 { return true }
        guard let directoryPath, !pathPatterns.isEmpty else { return false }
        var path = directoryPath
        if !path.isEmpty { path.append(0x2F) }
        path.append(contentsOf: UnsafeRawBufferPointer(start: name, count: strlen(name)))
        path.append(0)
        return path.withUnsafeBufferPointer { path in
            path.withMemoryRebound(to: CChar.self) { path in
                pathPatterns.contains { fnmatch($0, path.baseAddress!, FNM_PATHNAME) == 0 }
            }
        }
    }

    /// The path of the subdirectory `name` of the directory at `directoryPath`, if walks
    /// below it still need paths (see ``excludes(_:in:)``).
    func childPath(_ name: UnsafePointer<CChar>, of directoryPath: [UInt8]?) -> [UInt8]? {
        guard let directoryPath, !pathPatterns.isEmpty else { return nil }
        let slashes = directoryPath.isEmpty ? 0 : directoryPath.count { $0 == 0x2F } + 1
        // The child's entries have one slash more than the child.
        guard needsPath(forEntriesWithSlashes: slashes + 1) else { return nil }
        var path = directoryPath
        if !path.isEmpty { path.append(0x2F) }
        path.append(contentsOf: UnsafeRawBufferPointer(start: name, count: strlen(name)))
        return path
    }

    /// The path given to the top of a walk: empty, or nil when no pattern needs paths.
    var topPath: [UInt8]? { pathPatterns.isEmpty ? nil : [] }

    /// Whether the relative path `path` (no leading `/`) is excluded, itself or by one of
    /// the directories above it: for tests and tools that check a path after the fact.
    public func excludes(path: String) -> Bool {
        var directory: [UInt8]? = topPath
        let components = path.split(separator: "/")
        for (index, component) in components.enumerated() {
            let excluded = String(component).withCString { excludes($0, in: directory) }
            if excluded { return true }
            if index < components.count - 1 {
                directory = String(component).withCString { childPath($0, of: directory) }
            }
        }
        return false
    }
}

/// An exclude pattern that cannot be used, in one sentence.
public struct ExclusionProblem: Error, Sendable, Equatable {
    public let message: String
    init(_ message: String) { self.message = message }
}
