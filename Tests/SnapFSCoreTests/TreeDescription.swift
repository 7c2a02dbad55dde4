import CLinux
import Glibc
@testable import SnapFSBacking
import SnapFSCore

/// Everything a snapshot must preserve about one entry, read without following symlinks
/// and without changing access times (O_NOATIME), so that describing a tree does not
/// change it.
struct EntryDescription: Equatable, CustomStringConvertible {
    var mode: mode_t
    var uid: uid_t
    var gid: gid_t
    var size: Int
    var accessTime: timespec
    var modificationTime: timespec
    var device: dev_t
    var symlinkTarget: [UInt8]
    var attributes: [[UInt8]: [UInt8]]
    var content: [UInt8]
    // Not compared: identity and allocation.
    var inode: ino_t = 0
    var links: nlink_t = 0
    var blocks: Int = 0

    static func == (a: EntryDescription, b: EntryDescription) -> Bool {
        a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.size == b.size
            && a.accessTime.tv_sec == b.accessTime.tv_sec && a.accessTime.tv_nsec == b.accessTime.tv_nsec
            && a.modificationTime.tv_sec == b.modificationTime.tv_sec
            && a.modificationTime.tv_nsec == b.modificationTime.tv_nsec
            && a.device == b.device && a.symlinkTarget == b.symlinkTarget && a.attributes == b.attributes
            && a.content == b.content
    }

    var description: String {
        let names = attributes.keys.map { String(decoding: $0, as: UTF8.self) }.sorted()
        return "mode \(String(mode, radix: 8)) owner \(uid):\(gid) size \(size) atime \(accessTime.tv_sec).\(accessTime.tv_nsec) "
            + "mtime \(modificationTime.tv_sec).\(modificationTime.tv_nsec) rdev \(device) "
            + "target \(String(decoding: symlinkTarget, as: UTF8.self)) xattrs \(names) content \(content.count) bytes"
    }
}

enum TreeDescription {
    /// Every entry below the directory `path` (the top itself under the empty key), by
    /// relative path bytes.
    static func of(_ path: String) -> [[UInt8]: EntryDescription] {
        let fd = open(path, O_RDONLY | O_DIRECTORY | SNAPFS_O_NOATIME)
        precondition(fd >= 0, "open \(path): \(errno)")
        defer { close(fd) }
        var result: [[UInt8]: EntryDescription] = [:]
        var status = stat()
        precondition(fstat(fd, &status) == 0)
        result[[]] = describe(status, parent: fd, name: nil, fd: fd)
        walk(fd, prefix: [], into: &result)
        return result
    }

    static func walk(_ dir: Int32, prefix: [UInt8], into result: inout [[UInt8]: EntryDescription]) {
        for (name, _) in entries(of: dir) {
            let key = prefix.isEmpty ? name : prefix + [0x2F] + name
            TreeFixture.withName(name) { cName in
                var status = stat()
                precondition(fstatat(dir, cName, &status, AT_SYMLINK_NOFOLLOW) == 0)
                if status.st_mode & S_IFMT == S_IFDIR {
                    let child = openat(dir, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | SNAPFS_O_NOATIME)
                    precondition(child >= 0)
                    result[key] = describe(status, parent: dir, name: cName, fd: child)
                    walk(child, prefix: key, into: &result)
                    close(child)
                } else {
                    result[key] = describe(status, parent: dir, name: cName, fd: -1)
                }
            }
        }
    }

    static func describe(_ status: stat, parent: Int32, name: UnsafePointer<CChar>?, fd: Int32) -> EntryDescription {
        var entry = EntryDescription(
            mode: status.st_mode, uid: status.st_uid, gid: status.st_gid,
            // A directory's size is the filesystem's business (btrfs: the length of its names).
            size: status.st_mode & S_IFMT == S_IFDIR ? 0 : Int(status.st_size),
            accessTime: status.st_atim, modificationTime: status.st_mtim, device: status.st_rdev,
            symlinkTarget: [], attributes: [:], content: [],
            inode: status.st_ino, links: status.st_nlink, blocks: Int(status.st_blocks))
        // Names that are not UTF-8 do not survive String: build the path from bytes.
        let pathBytes: [CChar] = {
            guard let name else { return Array("/proc/self/fd/\(fd)".utf8CString) }
            return Array("/proc/self/fd/\(parent)/".utf8CString.dropLast()) + Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
        }()
        entry.attributes = attributes(pathBytes)
        switch status.st_mode & S_IFMT {
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = readlinkat(parent, name!, &buffer, buffer.count)
            entry.symlinkTarget = buffer[0..<n].map { UInt8(bitPattern: $0) }
            // readlink updated the access time: put it back, so describing changes nothing.
            var times = [status.st_atim, timespec(tv_sec: 0, tv_nsec: SNAPFS_UTIME_OMIT)]
            utimensat(parent, name!, &times, AT_SYMLINK_NOFOLLOW)
        case S_IFREG:
            let file = openat(parent, name!, O_RDONLY | O_NOFOLLOW | SNAPFS_O_NOATIME)
            precondition(file >= 0)
            entry.content = readToEnd(file)
            close(file)
        default:
            break
        }
        return entry
    }

    static func attributes(_ path: [CChar]) -> [[UInt8]: [UInt8]] {
        var names = [CChar](repeating: 0, count: 65536)
        let length = llistxattr(path, &names, names.count)
        guard length > 0 else { return [:] }
        var result: [[UInt8]: [UInt8]] = [:]
        var start = 0
        while start < length {
            var end = start
            while names[end] != 0 { end += 1 }
            let name = Array(names[start...end])
            var value = [UInt8](repeating: 0, count: 65536)
            let size = lgetxattr(path, name, &value, value.count)
            precondition(size >= 0)
            result[name.dropLast().map { UInt8(bitPattern: $0) }] = Array(value[0..<size])
            start = end + 1
        }
        return result
    }

    /// (name, d_type) of every entry of the directory `fd` but `.` and `..`.
    static func entries(of fd: Int32) -> [([UInt8], UInt8)] {
        let copy = openat(fd, ".", O_RDONLY | O_DIRECTORY | SNAPFS_O_NOATIME)
        precondition(copy >= 0)
        guard let stream = fdopendir(copy) else { fatalError("fdopendir") }
        defer { closedir(stream) }
        var result: [([UInt8], UInt8)] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: UInt8.self, capacity: 256) { Array(UnsafeBufferPointer(start: $0, count: strlen(UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)))) }
            }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            result.append((name, entry.pointee.d_type))
        }
        return result
    }

    /// A relative path for messages.
    static func printable(_ key: [UInt8]) -> String {
        if key.isEmpty { return "<top>" }
        var text = String(decoding: key, as: UTF8.self).replacingNewlines()
        if text.count > 120 { text = "…" + text.suffix(100) }
        return text
    }
}

private extension String {
    func replacingNewlines() -> String { String(self.map { $0 == "\n" ? "⏎" : $0 }) }
}
