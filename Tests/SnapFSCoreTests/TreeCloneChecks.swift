import CLinux
import Glibc
@testable import SnapFSBacking
@testable import SnapFSCore
@testable import SnapFSSnapshots
import SystemPackage
import Testing

/// Shared checks of the cloner tests: a clone of the fixture must equal the fixture in
/// every attribute of every entry, leave the source unchanged, count what it made, and
/// relate inodes as its method promises.
enum TreeCloneChecks {
    static let excluded: Set<String> = [".snapshots", ".snapfs-work"]

    static func isExcluded(_ key: [UInt8]) -> Bool {
        excluded.contains { name in
            let bytes = Array(name.utf8)
            return key == bytes || key.starts(with: bytes + [0x2F])
        }
    }

    /// Clones `source` as `parent/name`; returns the source's and the clone's descriptions.
    @discardableResult
    static func cloneAndCompare(source: String, parent: String, name: String = "snap", method: CloneMethod,
                                threads: Int, sourceLocation: SourceLocation = #_sourceLocation) throws
        -> (source: [[UInt8]: EntryDescription], clone: [[UInt8]: EntryDescription]) {
        let before = TreeDescription.of(source)
        let sourceFD = open(source, O_RDONLY | O_DIRECTORY)
        let parentFD = open(parent, O_RDONLY | O_DIRECTORY)
        defer { close(sourceFD); close(parentFD) }
        let statistics = try TreeCloner(method: method, threads: threads)
            .clone(source: sourceFD, into: parentFD, name: name, excludeAtTop: excluded)
        let after = TreeDescription.of(source)
        let clone = TreeDescription.of(parent + "/" + name)
        compare(expected: before.filter { !isExcluded($0.key) }, actual: clone, sourceLocation: sourceLocation)
        // Cloning changes nothing in the source, access times included.
        // Except symlinks' access times: readlink updates them and has no O_NOATIME.
        let changed = before.keys.filter { key in
            guard var now = after[key] else { return true }
            if now.mode & S_IFMT == S_IFLNK { now.accessTime = before[key]!.accessTime }
            return now != before[key]!
        }.map(TreeDescription.printable).sorted()
        #expect(changed.isEmpty, "the source changed: \(changed)", sourceLocation: sourceLocation)

        var expected = CloneStatistics()
        for (key, entry) in before where !isExcluded(key) {
            switch entry.mode & S_IFMT {
            case S_IFDIR: expected.directories += 1
            case S_IFREG: expected.files += 1; expected.bytes += Int64(entry.size)
            case S_IFLNK: expected.symlinks += 1
            default: expected.specials += 1
            }
        }
        #expect(statistics == expected, sourceLocation: sourceLocation)
        checkInodes(method: method, source: before, clone: clone, sourceLocation: sourceLocation)
        return (before, clone)
    }

    static func compare(expected: [[UInt8]: EntryDescription], actual: [[UInt8]: EntryDescription],
                        sourceLocation: SourceLocation = #_sourceLocation) {
        let missing = Set(expected.keys).subtracting(actual.keys).map(TreeDescription.printable).sorted()
        let extra = Set(actual.keys).subtracting(expected.keys).map(TreeDescription.printable).sorted()
        #expect(missing.isEmpty, "missing in the clone: \(missing)", sourceLocation: sourceLocation)
        #expect(extra.isEmpty, "not in the source: \(extra)", sourceLocation: sourceLocation)
        for (key, entry) in expected {
            guard let other = actual[key] else { continue }
            #expect(other == entry, "\(TreeDescription.printable(key)):\n clone  \(other)\n source \(entry)",
                    sourceLocation: sourceLocation)
        }
    }

    /// hardlink: every regular file is the source's inode. reflink/copy: none is, and names
    /// that share an inode in the source share one in the clone.
    static func checkInodes(method: CloneMethod, source: [[UInt8]: EntryDescription], clone: [[UInt8]: EntryDescription],
                            sourceLocation: SourceLocation) {
        var groups: [ino_t: Set<ino_t>] = [:]
        for (key, entry) in source where entry.mode & S_IFMT == S_IFREG && !isExcluded(key) {
            guard let copy = clone[key] else { continue }
            if method == .hardlink {
                #expect(copy.inode == entry.inode, "\(TreeDescription.printable(key)) is not linked", sourceLocation: sourceLocation)
            } else {
                #expect(copy.inode != entry.inode, "\(TreeDescription.printable(key)) shares the inode", sourceLocation: sourceLocation)
                groups[entry.inode, default: []].insert(copy.inode)
            }
        }
        if method != .hardlink {
            #expect(groups.values.allSatisfy { $0.count == 1 }, "a hard-linked file was split", sourceLocation: sourceLocation)
            let cloneInodes = groups.values.compactMap(\.first)
            #expect(Set(cloneInodes).count == cloneInodes.count, "distinct files were merged", sourceLocation: sourceLocation)
            if let links = clone[Array("hl1".utf8)]?.links { #expect(links == 3, sourceLocation: sourceLocation) }
        }
    }

    /// Writing to the clone's file leaves the source's alone (reflink, copy).
    static func checkIndependence(source: String, clone: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let before = readWholeFile(source + "/a.txt")
        let fd = open(clone + "/a.txt", O_WRONLY | O_TRUNC)
        #expect(fd >= 0, sourceLocation: sourceLocation)
        _ = "changed".withCString { write(fd, $0, 7) }
        close(fd)
        #expect(readWholeFile(source + "/a.txt") == before, sourceLocation: sourceLocation)
        #expect(readWholeFile(clone + "/a.txt") == Array("changed".utf8), sourceLocation: sourceLocation)
    }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }
}
