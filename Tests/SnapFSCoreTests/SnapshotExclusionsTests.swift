import CLinux
import Glibc
@testable import SnapFSCore
@testable import SnapFSDaemon
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// The exclude patterns of tree snapshots: the matcher, its bounds, and the walks that use it.
@Suite struct SnapshotExclusionsTests {
    static let isRoot = geteuid() == 0

    private func rules(_ patterns: [String]) throws -> SnapshotExclusions {
        try SnapshotExclusions.parse(patterns).get()
    }

    @Test func aPatternWithoutASlashMatchesNamesAtAnyDepth() throws {
        let exclusions = try rules(["*.tmp", ".cache"])
        #expect(exclusions.excludes(path: "a.tmp"))
        #expect(exclusions.excludes(path: "deep/er/b.tmp"))
        #expect(exclusions.excludes(path: ".cache"))
        #expect(exclusions.excludes(path: "home/u/.cache"))
        // Below an excluded directory everything is excluded.
        #expect(exclusions.excludes(path: "home/u/.cache/x/y"))
        #expect(!exclusions.excludes(path: "a.tmpx"))
        #expect(!exclusions.excludes(path: "cache"))
        #expect(!exclusions.excludes(path: "home/u/.cache2/f"))
    }

    @Test func aPatternWithASlashMatchesThePathFromTheRoot() throws {
        let exclusions = try rules(["build/cache", "*/node_modules", "/top"])
        #expect(exclusions.excludes(path: "build/cache"))
        #expect(exclusions.excludes(path: "build/cache/objects/1"))
        #expect(exclusions.excludes(path: "web/node_modules"))
        #expect(exclusions.excludes(path: "top"))
        // FNM_PATHNAME: `*` does not cross `/`, and the path is anchored at the root.
        #expect(!exclusions.excludes(path: "a/b/node_modules"))
        #expect(!exclusions.excludes(path: "node_modules"))
        #expect(!exclusions.excludes(path: "src/build/cache"))
        #expect(!exclusions.excludes(path: "build/cache2"))
        #expect(!exclusions.excludes(path: "a/top"))
        #expect(exclusions.deepestSlashes == 1)
        #expect(exclusions.description == "build/cache */node_modules /top")
    }

    @Test func pathsAreCarriedOnlyAsDeepAsAPatternReaches() throws {
        let exclusions = try rules(["a/b/c"])
        let top = try #require(exclusions.topPath)
        let a = try #require("a".withCString { exclusions.childPath($0, of: top) })
        let b = try #require("b".withCString { exclusions.childPath($0, of: a) })
        #expect(b == Array("a/b".utf8))
        // The entries of a/b/c would have three slashes: no pattern has as many.
        #expect("c".withCString { exclusions.childPath($0, of: b) } == nil)
        // Name patterns alone need no path at all.
        #expect(try rules(["*.o"]).topPath == nil)
        #expect(SnapshotExclusions.none.isEmpty)
    }

    @Test func theStatusValueReadsBackEveryPatternExactly() throws {
        let patterns = ["*.tmp", "My Cache", "a\\*b", "\\x20", "x/y z"]
        let exclusions = try rules(patterns)
        #expect(exclusions.description == "*.tmp My\\x20Cache a\\\\*b \\\\x20 x/y\\x20z")
        #expect(SnapshotExclusions(statusValue: exclusions.description)?.patterns == patterns)
        #expect(SnapshotExclusions(statusValue: "a//b") == nil)
    }

    @Test func badPatternsAreRefusedWithAReason() {
        func problem(_ patterns: [String]) -> String? {
            if case .failure(let problem) = SnapshotExclusions.parse(patterns) { return problem.message }
            return nil
        }
        #expect(problem([""])?.contains("needs a glob") == true)
        #expect(problem(["/"])?.contains("whole tree") == true)
        #expect(problem(["cache/"])?.contains("empty component") == true)
        #expect(problem(["a//b"])?.contains("empty component") == true)
        #expect(problem(["a/../b"])?.contains(". or ..") == true)
        #expect(problem([String(repeating: "x", count: 4097)])?.contains("at most 4096") == true)
        #expect(problem(Array(repeating: "*.o", count: 65))?.contains("at most 64") == true)
        #expect(problem(Array(repeating: "*.o", count: 64)) == nil)
        #expect(problem([String(repeating: "x", count: 4096)]) == nil)
    }

    @Test func mountOptionsCollectThePatternsAndReportProblems() {
        let options = MountOptions(["exclude=*.tmp", "keep_last=3", "exclude=build/cache"])
        #expect(options.problems.isEmpty)
        #expect(options.snapshots.exclusions.patterns == ["*.tmp", "build/cache"])
        #expect(!options.passed.contains { $0.hasPrefix("exclude") })
        let bad = MountOptions(["exclude="])
        #expect(bad.problems == ["exclude= needs a glob (like *.tmp, .cache, build/cache)"])
        let many = MountOptions((0...64).map { "exclude=p\($0)" })
        #expect(many.problems == ["65 exclude patterns: at most 64"])
    }

    /// Builds a tree with excluded and kept entries at the top, in the middle and past the
    /// depth where the cloner walks with a cursor.
    private func buildTree(at root: String) {
        let deep = (0..<(CloneDirectory.deepWalkDepth + 6)).map { "d\($0)" }.joined(separator: "/")
        let commands = """
        set -e; cd '\(root)'
        mkdir -p build/cache/objects build/out web/node_modules/pkg a/b/node_modules src/.cache/x '\(deep)'
        echo o > build/cache/objects/1; echo out > build/out/bin; echo m > web/node_modules/pkg/index.js
        echo kept > a/b/node_modules/kept; echo t > src/x.tmp; echo c > src/.cache/x/f; echo s > src/main.c
        echo t > '\(deep)/deep.tmp'; echo k > '\(deep)/deep.txt'; mkdir '\(deep)/.cache'; echo c > '\(deep)/.cache/f'
        echo t > top.tmp; echo k > keep
        """
        #expect(system(commands) == 0)
    }

    private func present(_ root: String) -> Set<String> {
        var found = Set<String>()
        let pipe = popen("cd '\(root)' && find . -mindepth 1 | sed 's|^\\./||'", "r")!
        var line = [CChar](repeating: 0, count: 8192)
        while fgets(&line, Int32(line.count), pipe) != nil {
            found.insert(String(cString: line).trimmingSuffix("\n"))
        }
        pclose(pipe)
        return found
    }

    private func expectExcluded(_ tree: Set<String>, source: Set<String>, _ exclusions: SnapshotExclusions) {
        let wanted = source.filter { !exclusions.excludes(path: $0) }
        #expect(tree == wanted, "extra: \(tree.subtracting(wanted).sorted()), missing: \(wanted.subtracting(tree).sorted())")
        #expect(tree.contains("a/b/node_modules/kept"))
        #expect(tree.contains("src/main.c"))
        #expect(!tree.contains("build/cache"))
        #expect(!tree.contains { $0.hasSuffix("deep.tmp") })
        #expect(tree.contains { $0.hasSuffix("deep.txt") })
    }

    @Test(.enabled(if: isRoot), arguments: [CloneMethod.hardlink, .copy])
    func theClonerLeavesExcludedEntriesOut(method: CloneMethod) throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let source = dir.directory("src")
        let snapshots = dir.directory("snaps")
        buildTree(at: source)
        let exclusions = try rules(["*.tmp", ".cache", "build/cache", "*/node_modules"])
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        let parentFD = open(snapshots, O_RDONLY | O_DIRECTORY)
        defer { close(sourceFD); close(parentFD) }
        _ = try TreeCloner(method: method, threads: 2, exclusions: exclusions)
            .clone(source: sourceFD, into: parentFD, name: "snap", excludeAtTop: [])
        expectExcluded(present(snapshots + "/snap"), source: present(source), exclusions)
    }

    @Test(.enabled(if: isRoot)) func thePrunerRemovesExcludedEntriesAndKeepsTimes() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let tree = dir.directory("tree")
        buildTree(at: tree)
        let before = present(tree)
        var srcBefore = stat()
        stat(tree + "/src", &srcBefore)
        let exclusions = try rules(["*.tmp", ".cache", "build/cache", "*/node_modules"])
        let fd = open(tree, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        let removed = try ExclusionPruner.prune(fd, exclusions, noAccessTime: 0)
        #expect(removed == 7)
        expectExcluded(present(tree), source: before, exclusions)
        var srcAfter = stat()
        stat(tree + "/src", &srcAfter)
        #expect(srcAfter.st_mtim.tv_sec == srcBefore.st_mtim.tv_sec && srcAfter.st_mtim.tv_nsec == srcBefore.st_mtim.tv_nsec)
    }
}

private extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
