import CLinux
import Glibc

/// Builds the tree the cloner tests copy: every kind of entry, special modes, foreign
/// owners, xattrs and ACLs, symlinks (absolute, dangling), a FIFO, a socket, device nodes,
/// a sparse file, hard links, awkward names, deep nesting, and a `.snapshots` to exclude.
/// Needs root (chown, mknod, trusted.* xattrs).
enum TreeFixture {
    static let deepLevels = 240
    /// Name of every level of the deep chain: 240 × 21 bytes is more than PATH_MAX.
    static let deepName: [UInt8] = Array("d".utf8) + Array(repeating: 0x78, count: 19)
    static let nonUTF8: [UInt8] = [0x66, 0xFF, 0xFE, 0x2E, 0x62, 0x69, 0x6E]
    static let nobody: uid_t = 65534

    /// Builds the tree in the directory `path`; returns the notes of features the
    /// filesystem refused (for example ACLs without setfacl).
    @discardableResult
    static func build(at path: String) -> [String] {
        var notes: [String] = []
        let root = open(path, O_RDONLY | O_DIRECTORY)
        precondition(root >= 0)
        defer { close(root) }

        file(root, "a.txt", "hello\n", mode: 0o644)
        file(root, "empty", "", mode: 0o600)
        file(root, "no-permissions", "secret", mode: 0o000)
        directory(root, "dir1", mode: 0o755)
        let dir1 = openDirectory(root, "dir1")
        file(dir1, "setuid-prog", "#!/bin/sh\necho hi\n", mode: 0o755)
        chown(dir1, "setuid-prog", nobody, 0)
        mode(dir1, "setuid-prog", 0o4755)
        file(dir1, "setgid-prog", "x", mode: 0o755)
        mode(dir1, "setgid-prog", 0o2711)
        directory(dir1, "sub", mode: 0o750)
        let sub = openDirectory(dir1, "sub")
        directory(sub, "deeper", mode: 0o700)
        let deeper = openDirectory(sub, "deeper")
        file(deeper, "file", String(repeating: "deep ", count: 1000), mode: 0o640)
        chown(deeper, "file", nobody, nobody)
        close(deeper)
        close(sub)
        close(dir1)
        chown(root, "dir1", nobody, nobody)
        mode(root, "dir1", 0o2775)  // setgid directory
        directory(root, "sticky", mode: 0o777)
        mode(root, "sticky", 0o1777)
        directory(root, "read-only-dir", mode: 0o755)
        let readOnly = openDirectory(root, "read-only-dir")
        file(readOnly, "inside", "ro", mode: 0o444)
        close(readOnly)
        mode(root, "read-only-dir", 0o555)
        directory(root, "locked-dir", mode: 0o755)
        inside(root, "locked-dir") { file($0, "hidden", "h", mode: 0o600) }
        mode(root, "locked-dir", 0o000)

        // Extended attributes.
        file(root, "xattr-file", "x", mode: 0o644)
        xattr(root, "xattr-file", "user.comment", Array("hi there".utf8))
        xattr(root, "xattr-file", "user.empty", [])
        xattr(root, "xattr-file", "user.binary", [0, 1, 2, 255, 0])
        xattr(root, "xattr-file", "trusted.snapfs", Array("t".utf8))
        if !xattr(root, "xattr-file", "security.snapfs-test", Array("s".utf8)) { notes.append("no security.* xattr") }
        directory(root, "xattr-dir", mode: 0o755)
        xattr(root, "xattr-dir", "user.dirattr", Array("d".utf8))
        xattr(root, "xattr-dir", "trusted.dirattr", Array("td".utf8))
        inside(root, "xattr-dir") { file($0, "plain", "p", mode: 0o644) }

        // Symlinks and special files.
        symlink(root, "abs-link", "/etc/passwd")
        symlink(root, "dangling", "does/not/exist")
        symlink(root, "rel-link", "a.txt")
        symlink(root, "dir-link", "dir1")
        chown(root, "rel-link", nobody, nobody)
        xattr(root, "abs-link", "trusted.linkattr", Array("l".utf8))
        precondition(mkfifoat(root, "fifo", 0o640) == 0)
        precondition(mknodat(root, "null-device", S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0)
        precondition(mknodat(root, "block-device", S_IFBLK | 0o660, dev_t((7 << 8) | 200)) == 0)
        chown(root, "block-device", 0, 6)
        precondition(mknodat(root, "socket", S_IFSOCK | 0o755, 0) == 0)
        xattr(root, "fifo", "user.fifoattr", Array("f".utf8))

        // A sparse file: 10 MiB with data at 0 and at 5 MiB.
        let sparse = openat(root, "sparse", O_WRONLY | O_CREAT | O_EXCL, 0o644)
        precondition(sparse >= 0)
        _ = "start".withCString { pwrite(sparse, $0, 5, 0) }
        _ = "middle".withCString { pwrite(sparse, $0, 6, 5 << 20) }
        precondition(ftruncate(sparse, 10 << 20) == 0)
        close(sparse)

        // Hard links: three names of one file in two directories, and a pair.
        file(root, "hl1", "linked content", mode: 0o640)
        xattr(root, "hl1", "user.linked", Array("yes".utf8))
        directory(root, "dir2", mode: 0o755)
        let dir2 = openDirectory(root, "dir2")
        precondition(linkat(root, "hl1", dir2, "hl2", 0) == 0)
        precondition(linkat(root, "hl1", root, "hl3", 0) == 0)
        file(dir2, "pair-a", "pair", mode: 0o600)
        precondition(linkat(dir2, "pair-a", dir2, "pair-b", 0) == 0)
        close(dir2)

        // Awkward names.
        file(root, "with space", "s", mode: 0o644)
        file(root, "new\nline", "n", mode: 0o644)
        file(root, "ünïcödé", "u", mode: 0o644)
        withName(nonUTF8) { name in
            let fd = openat(root, name, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            precondition(fd >= 0)
            close(fd)
        }

        // Deep nesting beyond PATH_MAX, reachable only relative to descriptors.
        var level = dup(root)
        for _ in 0..<deepLevels {
            withName(deepName) { name in
                precondition(mkdirat(level, name, 0o755) == 0)
                let next = openat(level, name, O_RDONLY | O_DIRECTORY)
                precondition(next >= 0)
                close(level)
                level = next
            }
        }
        file(level, "bottom", "at the bottom", mode: 0o644)
        close(level)

        // What the snapshots exclude at the top, and the same name deeper, which stays.
        directory(root, ".snapshots", mode: 0o755)
        inside(root, ".snapshots") { file($0, "old-snapshot-file", "old", mode: 0o644) }
        directory(root, "nested", mode: 0o755)
        inside(root, "nested") { directory($0, ".snapshots", mode: 0o755) }

        // ACLs (setfacl), on a file and on a directory with a default ACL whose children inherit it.
        if system("command -v setfacl >/dev/null 2>&1") == 0 {
            file(root, "acl-file", "acl", mode: 0o640)
            directory(root, "acl-dir", mode: 0o750)
            let ok = system("setfacl -m u:65534:rw '\(path)/acl-file' && setfacl -m u:65534:rx -d -m u:65534:rwx '\(path)/acl-dir'") == 0
            if ok {
                inside(root, "acl-dir") { file($0, "inherits", "i", mode: 0o666) }
                let inner = openDirectory(root, "acl-dir")
                directory(inner, "subdir", mode: 0o777)
                close(inner)
            } else {
                notes.append("setfacl failed")
            }
        } else {
            notes.append("no setfacl")
        }

        setTimes(root)
        return notes
    }

    /// Gives every entry distinct access and modification times (nanoseconds included),
    /// directories after their contents.
    static func setTimes(_ directory: Int32) {
        var counter = 0
        func visit(_ fd: Int32) {
            for (name, type) in TreeDescription.entries(of: fd) {
                withName(name) { cName in
                    if type == UInt8(DT_DIR) {
                        let child = openat(fd, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                        precondition(child >= 0)
                        visit(child)
                        close(child)
                    }
                    counter += 1
                    var times = [timespec(tv_sec: 1_000_000_000 + counter, tv_nsec: 123_456_789),
                                 timespec(tv_sec: 1_100_000_000 + counter * 7, tv_nsec: 987_654_321)]
                    precondition(utimensat(fd, cName, &times, AT_SYMLINK_NOFOLLOW) == 0)
                }
            }
        }
        visit(directory)
        var times = [timespec(tv_sec: 999_999_999, tv_nsec: 1), timespec(tv_sec: 1_099_999_999, tv_nsec: 2)]
        precondition(futimens(directory, &times) == 0)
    }

    // MARK: helpers (all relative to directory descriptors)

    static func file(_ dir: Int32, _ name: String, _ content: String, mode: mode_t) {
        let fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        precondition(fd >= 0, "create \(name): \(errno)")
        _ = content.withCString { write(fd, $0, strlen($0)) }
        precondition(fchmod(fd, mode) == 0)
        close(fd)
    }

    static func directory(_ dir: Int32, _ name: String, mode: mode_t) {
        precondition(mkdirat(dir, name, 0o700) == 0, "mkdir \(name): \(errno)")
        precondition(fchmodat(dir, name, mode, 0) == 0)
    }

    static func openDirectory(_ dir: Int32, _ name: String) -> Int32 {
        let fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        precondition(fd >= 0)
        return fd
    }

    /// Calls `body` with a descriptor of the subdirectory `name`, closed afterwards.
    static func inside(_ dir: Int32, _ name: String, _ body: (Int32) -> Void) {
        let fd = openDirectory(dir, name)
        body(fd)
        close(fd)
    }

    static func mode(_ dir: Int32, _ name: String, _ mode: mode_t) {
        precondition(fchmodat(dir, name, mode, 0) == 0)
    }

    static func chown(_ dir: Int32, _ name: String, _ uid: uid_t, _ gid: gid_t) {
        precondition(fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0)
    }

    static func symlink(_ dir: Int32, _ name: String, _ target: String) {
        precondition(symlinkat(target, dir, name) == 0)
    }

    @discardableResult
    static func xattr(_ dir: Int32, _ name: String, _ key: String, _ value: [UInt8]) -> Bool {
        let path = "/proc/self/fd/\(dir)/\(name)"
        return value.withUnsafeBytes { lsetxattr(path, key, $0.baseAddress, $0.count, 0) } == 0
    }

    static func withName<R>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (name + [0]).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
        }
    }
}
