import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// The entry names of a directory, read through a descriptor.
public enum DirectoryNames {
    /// The names in the directory `fd` (which may be `O_PATH`), without `.` and `..`, as raw
    /// bytes: file names need not be UTF-8. `fd` stays open and unchanged.
    public static func names(in fd: Int32) throws(Errno) -> [[UInt8]] {
        // fdopendir takes over its descriptor and moves its offset: give it a fresh one.
        let own = snapfs_openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if own < 0 { throw Errno.current }
        guard let dir = fdopendir(own) else {
            let error = Errno.current
            close(own)
            throw error
        }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw Errno.current }
                return names
            }
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { pointer in
                    Array(UnsafeBufferPointer(start: pointer, count: strlen(UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self))))
                }
            }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            names.append(name)
        }
    }

    /// The names in the directory `fd` that are valid UTF-8; others are left out.
    public static func utf8Names(in fd: Int32) throws(Errno) -> [String] {
        try names(in: fd).compactMap { String(validating: $0, as: UTF8.self) }
    }
}
