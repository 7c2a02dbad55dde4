import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import SnapFSCore

/// The core's side of FUSE passthrough, with a kernel stand-in that hands out ids.
@Suite struct PassthroughTests {
    let root = InodeTable.rootID
    let me = RequestContext.daemon

    final class FakeKernel: KernelPassthrough, @unchecked Sendable {
        let state = Mutex<(next: Int32, registered: Set<Int32>, refuse: Bool)>((1, [], false))
        func register(_ fd: Int32) -> Int32? {
            state.withLock { s in
                guard !s.refuse, fcntl(fd, F_GETFD) >= 0 else { return nil }
                defer { s.next += 1 }
                s.registered.insert(s.next)
                return s.next
            }
        }
        func unregister(_ id: Int32) { _ = state.withLock { $0.registered.remove(id) } }
        var registered: Set<Int32> { state.withLock { $0.registered } }
    }

    func mount(_ dir: TemporaryDirectory) throws -> (SnapFileSystem, FakeKernel) {
        var options = FileSystemOptions()
        options.cache.size = 1 << 20
        options.kernelPassthrough = true
        let fs = try SnapFileSystem(backingPath: dir.path, options: options)
        let kernel = FakeKernel()
        fs.attachPassthrough(kernel)
        return (fs, kernel)
    }

    /// Creates `name` and closes it (as the kernel would: released, then gone).
    func create(_ fs: SnapFileSystem, _ name: String, _ text: String = "") throws -> UInt64 {
        let (entry, created) = try fs.create(parent: root, name: name, mode: 0o644, flags: O_WRONLY, context: me)
        #expect(created.passthrough == .none)
        try write(fs, created, text, at: 0)
        fs.release(created)
        return entry.inode
    }

    func write(_ fs: SnapFileSystem, _ file: OpenFile, _ text: String, at offset: Int64) throws {
        _ = try Array(text.utf8).withUnsafeBytes { try fs.write(file, $0, offset: offset, context: me) }
    }

    @Test func aLoneReadOnlyOpenPassesThroughAndOthersJoinIt() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (fs, kernel) = try mount(dir)
        let inode = try create(fs, "f", "created")
        var reader: OpenFile? = try fs.open(inode, flags: O_RDONLY, context: me)
        guard case let .reads(id)? = reader?.passthrough else {
            Issue.record("expected passthrough, got \(String(describing: reader?.passthrough))")
            return
        }
        #expect(kernel.registered == [id])
        // A writer joins with direct I/O, and its writes reach the backing file at once.
        var writer: OpenFile? = try fs.open(inode, flags: O_RDWR, context: me)
        #expect(writer?.passthrough == .directIO(id: id))
        #expect(writer.map { fs.closeNeedsDaemon($0) } == false)
        try write(fs, writer!, "WRITTEN", at: 0)
        #expect(readFile(dir.path + "/f") == "WRITTEN")
        #expect(fs.cache?.statistics.dirtyBytes == 0)
        // A second reader reads directly too.
        var second: OpenFile? = try fs.open(inode, flags: O_RDONLY, context: me)
        #expect(second?.passthrough == .reads(id: id))
        reader = nil
        writer = nil
        #expect(kernel.registered == [id])
        second = nil
        _ = second
        // The last one gone, the backing file is unregistered and a writer is cached again.
        #expect(kernel.registered.isEmpty)
        let cached = try fs.open(inode, flags: O_RDWR, context: me)
        #expect(cached.passthrough == .none)
        try write(fs, cached, "c", at: 0)
        #expect(readFile(dir.path + "/f") == "WRITTEN")
        #expect(fs.cache?.statistics.dirtyBytes ?? 0 > 0)
        // Beside a cached open, a reader does not pass through (the kernel would refuse it).
        let beside = try fs.open(inode, flags: O_RDONLY, context: me)
        #expect(beside.passthrough == .none)
        fs.release(cached)
    }

    @Test func dirtyDataIsWrittenBackBeforeTheKernelReadsTheBackingFile() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (fs, _) = try mount(dir)
        let inode = try create(fs, "f")
        do {
            let cached = try fs.open(inode, flags: O_WRONLY, context: me)
            try write(fs, cached, "dirty", at: 0)
            #expect(readFile(dir.path + "/f") == "")
            // Released without write-back (as when write-back failed at close): data stays dirty.
        }
        #expect(fs.cache?.statistics.dirtyBytes ?? 0 > 0)
        let reader = try fs.open(inode, flags: O_RDONLY, context: me)
        #expect(reader.passthrough.backingID != nil)
        #expect(readFile(dir.path + "/f") == "dirty")
        #expect(fs.cache?.statistics.dirtyBytes == 0)
    }

    @Test func noPassthroughWhenTheKernelRefusesForTruncationOrWithoutTheOption() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let (fs, kernel) = try mount(dir)
        let inode = try create(fs, "f")
        kernel.state.withLock { $0.refuse = true }
        #expect(try fs.open(inode, flags: O_RDONLY, context: me).passthrough == .none)
        kernel.state.withLock { $0.refuse = false }
        // A file opened to truncate is not passed through either.
        #expect(try fs.open(inode, flags: O_RDONLY | O_TRUNC, context: me).passthrough == .none)
        #expect(try fs.open(inode, flags: O_RDONLY, context: me).passthrough != .none)

        let plain = try SnapFileSystem(backingPath: dir.path)
        plain.attachPassthrough(kernel)
        let node = try plain.lookup(parent: root, name: "f").inode
        #expect(try plain.open(node, flags: O_RDONLY, context: me).passthrough == .none)
    }
}
