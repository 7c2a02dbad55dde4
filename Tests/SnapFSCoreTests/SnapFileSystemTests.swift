import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import SnapFSCore

/// The core driven directly, without FUSE, over a real backing directory.
@Suite struct SnapFileSystemTests {
    let root = InodeTable.rootID
    let me = RequestContext.daemon

    @Test func createWriteReadRenameUnlinkReachTheBackingDirectory() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try SnapFileSystem(backingPath: dir.path)
        let (entry, file) = try fs.create(parent: root, name: "a.txt", mode: 0o640, flags: O_RDWR, context: me)
        #expect(entry.attributes.st_mode & 0o777 == 0o640)
        let text = Array("hello snapfs".utf8)
        let written = try text.withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
        #expect(written == text.count)
        #expect(readFile(dir.path + "/a.txt") == "hello snapfs")
        guard case .file(let fd, let offset, let length) = try fs.read(file, offset: 6, size: 100) else {
            Issue.record("expected a file-backed read")
            return
        }
        var buffer = [UInt8](repeating: 0, count: length)
        let n = pread(fd, &buffer, length, off_t(offset))
        #expect(String(decoding: buffer[0..<n], as: UTF8.self) == "snapfs")

        try fs.rename(parent: root, name: "a.txt", newParent: root, newName: "b.txt", flags: 0)
        #expect(readFile(dir.path + "/b.txt") == "hello snapfs")
        #expect(access(dir.path + "/a.txt", F_OK) != 0)
        // The inode survives the rename: attributes through the same id.
        #expect(try fs.getattr(entry.inode).st_size == off_t(text.count))
        try fs.unlink(parent: root, name: "b.txt")
        #expect(access(dir.path + "/b.txt", F_OK) != 0)
        // An unlinked file still open keeps working.
        _ = try text.withUnsafeBytes { try fs.write(file, $0, offset: 100, context: me) }
        #expect(try fs.getattr(entry.inode).st_size == 100 + off_t(text.count))
    }

    @Test func withThePageCacheWritesWaitUntilCloseFsyncOrSnapshotAndReadsSeeThem() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var options = FileSystemOptions()
        options.cache.size = 1 << 20
        let fs = try SnapFileSystem(backingPath: dir.path, options: options)
        let (entry, created) = try fs.create(parent: root, name: "c", mode: 0o644, flags: O_WRONLY, context: me)
        // The creating descriptor writes through (its close needs no request); a reopened one is cached.
        #expect(created.writesThrough && !fs.closeNeedsDaemon(created))
        let first = Array("written through".utf8)
        _ = try first.withUnsafeBytes { try fs.write(created, $0, offset: 0, context: me) }
        #expect(readFile(dir.path + "/c") == "written through")
        #expect(fs.cache?.statistics.dirtyBytes == 0)
        try fs.setattr(entry.inode, AttributeChanges(size: 0), file: created, context: me)
        let file = try fs.open(entry.inode, flags: O_WRONLY, context: me)
        #expect(!file.writesThrough && fs.closeNeedsDaemon(file))
        let text = Array("cached, not yet written".utf8)
        _ = try text.withUnsafeBytes { try fs.write(file, $0, offset: 4096 * 3 + 10, context: me) }
        // Not in the backing file yet; getattr and reads see it.
        #expect(readFile(dir.path + "/c") == "")
        #expect(try fs.getattr(entry.inode).st_size == off_t(4096 * 3 + 10 + text.count))
        guard case .bytes(let bytes) = try fs.read(file, offset: 4096 * 3, size: 100) else {
            Issue.record("expected a read from the cache")
            return
        }
        #expect(bytes == [UInt8](repeating: 0, count: 10) + text)
        // A truncate drops what lies past the new end, in the cache and the file.
        _ = try fs.setattr(entry.inode, AttributeChanges(size: 4096 * 3 + 16), file: file, context: me)
        try fs.fsync(file, dataOnly: true)
        #expect(Array((readFile(dir.path + "/c") ?? "").utf8) == [UInt8](repeating: 0, count: 4096 * 3 + 10) + text.prefix(6))
        // Writes after that reach the file at close.
        _ = try text.withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
        #expect(readFile(dir.path + "/c")?.hasPrefix("cached") == false)
        try fs.flush(file)
        #expect(readFile(dir.path + "/c")?.hasPrefix("cached, not yet written") == true)
        #expect(fs.cache?.statistics.dirtyBytes == 0)
    }

    @Test func errorsAreErrnos() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.directory("d")
        _ = dir.file("d/x")
        let fs = try SnapFileSystem(backingPath: dir.path)
        #expect(throws: Errno.noSuchFileOrDirectory) { try fs.lookup(parent: root, name: "missing") }
        #expect(throws: Errno.fileExists) { try fs.mkdir(parent: root, name: "d", mode: 0o755, context: me) }
        #expect(throws: Errno.directoryNotEmpty) { try fs.rmdir(parent: root, name: "d") }
        #expect(throws: Errno.fileExists) {
            _ = try fs.mkdir(parent: root, name: "e", mode: 0o755, context: me)
            try fs.rename(parent: root, name: "e", newParent: root, newName: "d", flags: 1 /* NOREPLACE */)
        }
        #expect(throws: Errno.invalidArgument) {
            try fs.rename(parent: root, name: "e", newParent: root, newName: "f", flags: 0x80)
        }
        #expect(throws: Errno(rawValue: ESTALE)) { try fs.getattr(987_654) }
    }

    @Test func symlinksInTheBackingTreeAreNeverFollowed() throws {
        let dir = TemporaryDirectory()
        let outside = TemporaryDirectory()
        defer { dir.remove(); outside.remove() }
        _ = outside.file("secret", contents: "outside")
        symlink(outside.path, dir.path + "/escape")
        let fs = try SnapFileSystem(backingPath: dir.path)
        let link = try fs.lookup(parent: root, name: "escape")
        #expect(link.attributes.isSymlink)
        #expect(String(decoding: try fs.readlink(link.inode).map { UInt8(bitPattern: $0) }, as: UTF8.self) == outside.path)
        // Looking up a name inside the symlink fails instead of reaching outside.
        #expect(throws: Errno.notDirectory) { try fs.lookup(parent: link.inode, name: "secret") }
        #expect(throws: Errno.notDirectory) {
            _ = try fs.create(parent: link.inode, name: "planted", mode: 0o644, flags: O_RDWR, context: me)
        }
        #expect(access(outside.path + "/planted", F_OK) != 0)
    }

    @Test func readOnlyRefusesEveryChange() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.file("f", contents: "x")
        var options = FileSystemOptions()
        options.readOnly = true
        let fs = try SnapFileSystem(backingPath: dir.path, options: options)
        let f = try fs.lookup(parent: root, name: "f")
        #expect(throws: Errno.readOnlyFileSystem) { try fs.mkdir(parent: root, name: "d", mode: 0o755, context: me) }
        #expect(throws: Errno.readOnlyFileSystem) { try fs.unlink(parent: root, name: "f") }
        #expect(throws: Errno.readOnlyFileSystem) { try fs.setattr(f.inode, AttributeChanges(mode: 0o600), file: nil, context: me) }
        #expect(throws: Errno.readOnlyFileSystem) { try fs.open(f.inode, flags: O_WRONLY, context: me) }
        #expect(try fs.open(f.inode, flags: O_RDONLY, context: me).fd >= 0)
        #expect(readFile(dir.path + "/f") == "x")
    }

    final class RecordingObserver: MutationObserver {
        let seen = Mutex<[String]>([])
        let refuse: Bool
        init(refuse: Bool) { self.refuse = refuse }
        func willMutate(_ mutation: Mutation) throws {
            seen.withLock { $0.append("\(mutation)") }
            if refuse { throw Errno.permissionDenied }
        }
    }

    @Test func everyMutationPassesTheObserverFirst() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let observer = RecordingObserver(refuse: false)
        let fs = try SnapFileSystem(backingPath: dir.path, observer: observer)
        let (entry, file) = try fs.create(parent: root, name: "f", mode: 0o644, flags: O_RDWR, context: me)
        _ = try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try fs.write(file, $0, offset: 5, context: me) }
        _ = try fs.setattr(entry.inode, AttributeChanges(size: 3), file: nil, context: me)
        try fs.fallocate(file, mode: 0, offset: 0, length: 4096, context: me)
        _ = try fs.mkdir(parent: root, name: "d", mode: 0o755, context: me)
        try fs.rename(parent: root, name: "f", newParent: root, newName: "g", flags: 0)
        try fs.unlink(parent: root, name: "g")
        let seen = observer.seen.withLock { $0 }
        #expect(seen.count == 7)
        // The write, with its 10 bytes at offset 5.
        #expect(seen[1].hasPrefix("write(") && seen[1].contains("offset: 5") && seen[1].contains("count: 10"))
        #expect(seen[2].hasPrefix("setAttributes"))
        #expect(seen.last!.hasPrefix("removeEntry"))
    }

    @Test func aRefusingObserverStopsTheChangeBeforeTheBackingStore() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = dir.file("keep", contents: "data")
        let fs = try SnapFileSystem(backingPath: dir.path, observer: RecordingObserver(refuse: true))
        #expect(throws: Errno.permissionDenied) { try fs.unlink(parent: root, name: "keep") }
        #expect(throws: Errno.permissionDenied) { try fs.mkdir(parent: root, name: "new", mode: 0o755, context: me) }
        #expect(readFile(dir.path + "/keep") == "data")
        #expect(access(dir.path + "/new", F_OK) != 0)
    }

    @Test func readdirPlusReferencesEntriesAndResumesAtOffsets() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let names = (0..<50).map { "file\($0)" }
        for name in names { _ = dir.file(name) }
        let fs = try SnapFileSystem(backingPath: dir.path)
        let handle = try fs.opendir(root)
        var seen: [String] = []
        var offset: Int64 = 0
        var refused = 0
        // Accept 7 entries per call, then refuse one: the refused one must come again next call.
        while true {
            var accepted = 0
            var progressed = false
            try fs.readdir(handle, offset: offset, plus: true) { item in
                if accepted == 7 { refused += 1; return false }
                accepted += 1
                progressed = true
                seen.append(String(cString: item.name))
                offset = item.nextOffset
                if let entry = item.entry { #expect(fs.inodes.lookups(entry.inode) != nil) }
                return true
            }
            if !progressed { break }
        }
        #expect(refused > 0)
        #expect(Set(seen) == Set(names + [".", ".."]))
        #expect(seen.count == names.count + 2)
        // One reference per listed entry (refused entries were given back).
        #expect(fs.inodes.count == names.count + 1)
    }
}
