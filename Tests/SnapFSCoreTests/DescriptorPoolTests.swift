import Glibc
import SystemPackage
import Testing
@testable import SnapFSCore

/// The kernel may hold more inodes than the daemon may have descriptors: idle ones are
/// closed and reopened by file handle when used again.
@Suite struct DescriptorPoolTests {
    let me = RequestContext.daemon

    @Test func moreInodesThanTheBudgetStayUsable() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try SnapFileSystem(backingPath: dir.path, descriptorBudget: 16)
        guard let pool = fs.inodes.pool else {
            // Without CAP_DAC_READ_SEARCH or file handles, descriptors are never closed.
            Issue.record("no descriptor pool on this backing filesystem (needs root and file handles)")
            return
        }
        var entries: [Entry] = []
        for index in 0..<200 {
            let (entry, file) = try fs.create(parent: InodeTable.rootID, name: "f\(index)", mode: 0o644,
                                              flags: O_RDWR, context: me)
            let text = Array("file \(index)".utf8)
            _ = try text.withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
            fs.release(file)
            entries.append(entry)
        }
        #expect(pool.open <= 16)
        let closed = entries.filter { (try? fs.inodes.inode($0.inode).hasOpenDescriptor) == false }
        #expect(closed.count >= 150)
        // Every inode still works: attributes, open and read, xattrs, rename, link.
        for (index, entry) in entries.enumerated() {
            let st = try fs.getattr(entry.inode)
            #expect(st.st_ino == entry.attributes.st_ino)
            #expect(st.st_size == Int64("file \(index)".utf8.count))
            let file = try fs.open(entry.inode, flags: O_RDONLY, context: me)
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = pread(file.fd, &buffer, 64, 0)
            #expect(String(decoding: buffer[0..<n], as: UTF8.self) == "file \(index)")
        }
        let value = Array("v".utf8)
        try value.withUnsafeBytes { try fs.setxattr(entries[3].inode, name: "user.k", value: $0, flags: 0) }
        _ = try fs.link(entries[5].inode, parent: InodeTable.rootID, name: "second-name")
        #expect(try fs.getattr(entries[5].inode).st_nlink == 2)
        #expect(pool.open <= 16)
    }

    @Test func thousandsOfSweepsAndReusedInodeNumbers() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try SnapFileSystem(backingPath: dir.path, descriptorBudget: 8)
        guard let pool = fs.inodes.pool else { return }
        // Many sweeps (one every few creates); the kernel keeps every inode.
        var kept: [UInt64: (node: UInt64, ino: UInt64)] = [:]
        for index in 0..<6000 {
            let (entry, file) = try fs.create(parent: InodeTable.rootID, name: "n\(index)", mode: 0o644, flags: O_RDWR, context: me)
            fs.release(file)
            // Delete most of them at once: their numbers get reused by later creates while
            // the kernel (this test) still holds the old, closed inodes.
            if index % 10 != 0 {
                try fs.unlink(parent: InodeTable.rootID, name: "n\(index)")
            } else {
                kept[UInt64(index)] = (entry.inode, UInt64(entry.attributes.st_ino))
            }
        }
        #expect(pool.open <= 8)
        for (index, item) in kept {
            let st = try fs.getattr(item.node)
            #expect(UInt64(st.st_ino) == item.ino)
            let again = try fs.lookup(parent: InodeTable.rootID, name: "n\(index)")
            #expect(again.inode == item.node)
        }
    }

    /// A file held open costs one descriptor once the pool is under pressure: the inode's
    /// `O_PATH` descriptor is closed and the open file's lent in its place.
    @Test func heldOpenFilesCostOneDescriptorEach() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let fs = try SnapFileSystem(backingPath: dir.path, descriptorBudget: 64)
        guard let pool = fs.inodes.pool else {
            Issue.record("no descriptor pool on this backing filesystem (needs root and file handles)")
            return
        }
        // (Counted by the pool: other tests open descriptors in this process meanwhile.)
        var files: [OpenFile] = []
        for index in 0..<300 {
            let (_, file) = try fs.create(parent: InodeTable.rootID, name: "held\(index)", mode: 0o644,
                                          flags: O_RDWR, context: me)
            files.append(file)
        }
        #expect(pool.handles == 300)
        // The pool closed all but a few `O_PATH` descriptors (its floor of 16) for the files.
        #expect(pool.open <= 16)
        // Every inode still works through the lent descriptor.
        for (index, file) in files.enumerated() {
            let text = Array("file \(index)".utf8)
            _ = try text.withUnsafeBytes { try fs.write(file, $0, offset: 0, context: me) }
            #expect(try fs.getattr(file.inode.id).st_size == Int64(text.count))
        }
        let value = Array("v".utf8)
        try value.withUnsafeBytes { try fs.setxattr(files[7].inode.id, name: "user.k", value: $0, flags: 0) }
        files.removeAll()
        #expect(pool.handles == 0)
        #expect(pool.open <= 64)
    }

    /// Each user may hold only so many files and directories open; root is not bounded.
    @Test func handlesAreBoundedPerUser() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var options = FileSystemOptions()
        options.handleLimits = HandleLedger.Limits(files: 3, directories: 1)
        let fs = try SnapFileSystem(backingPath: dir.path, options: options)
        let alice = RequestContext(uid: 61001, gid: 61001, pid: getpid())
        var held: [OpenFile] = []
        let entry: Entry
        do {
            let (created, file) = try fs.create(parent: InodeTable.rootID, name: "f", mode: 0o666, flags: O_RDWR, context: alice)
            entry = created
            held.append(file)
        }
        held.append(try fs.open(entry.inode, flags: O_RDONLY, context: alice))
        held.append(try fs.open(entry.inode, flags: O_RDONLY, context: alice))
        #expect(throws: Errno.tooManyOpenFiles) { try fs.open(entry.inode, flags: O_RDONLY, context: alice) }
        #expect(throws: Errno.tooManyOpenFiles) {
            try fs.create(parent: InodeTable.rootID, name: "g", mode: 0o666, flags: O_RDWR, context: alice)
        }
        #expect(access(dir.path + "/g", F_OK) != 0)
        let directory = try fs.opendir(InodeTable.rootID, context: alice)
        #expect(throws: Errno.tooManyOpenFiles) { try fs.opendir(InodeTable.rootID, context: alice) }
        for _ in 0..<5 { held.append(try fs.open(entry.inode, flags: O_RDONLY, context: me)) }
        #expect(fs.handles.held(by: alice.uid) == 4)
        held.removeFirst()
        #expect(fs.handles.held(by: alice.uid) == 3)
        held.append(try fs.open(entry.inode, flags: O_RDONLY, context: alice))
        _ = directory
    }
}

