import CLinux
import Glibc

/// The lock by which one snapfs daemon at a time serves a backing directory, held for the
/// daemon's whole life and dropped by the kernel when it dies (even by SIGKILL): an
/// exclusive `flock` on a file named after the directory's device and inode number, so
/// the same directory reached by another path (a symlink, a bind mount) is the same lock.
///
/// The lock files live in a directory only root reaches (`/run/snapfs`, 0700), not in the
/// backing directory: a user who can read the backing directory could otherwise take the
/// lock first and keep snapfs from mounting it. A daemon not run as root locks the
/// backing directory itself, which is the user's own.
public final class BackingLock: Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Where root's daemons keep their lock files.
    public static let rootDirectory = "/run/snapfs"

    /// Takes the lock of the directory at `backing` (a canonical path), or throws
    /// ``MountProblem/backingInUse(backing:why:)`` naming the daemon that holds it.
    public static func acquire(backing: String, directory: String = rootDirectory,
                               asRoot: Bool = geteuid() == 0) throws(MountProblem) -> BackingLock {
        let dirFD = snapfs_openat(AT_FDCWD, backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard dirFD >= 0 else { throw .mountFailed("cannot open backing directory \(backing): \(String(cString: strerror(errno)))") }
        guard asRoot else { return try lock(dirFD, backing: backing, writesPid: false) }
        defer { close(dirFD) }
        var st = stat()
        guard fstat(dirFD, &st) == 0 else { throw .mountFailed("cannot stat backing directory \(backing): \(String(cString: strerror(errno)))") }
        let lockDirectory = try ownDirectory(directory)
        defer { close(lockDirectory) }
        let name = "backing-\(String(st.st_dev, radix: 16))-\(st.st_ino).lock"
        let fd = snapfs_openat(lockDirectory, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .mountFailed("cannot open the lock file \(directory)/\(name): \(String(cString: strerror(errno)))") }
        return try lock(fd, backing: backing, writesPid: true)
    }

    /// `path` as a directory of root's alone (made if missing; one left by someone else
    /// or open to others is refused).
    private static func ownDirectory(_ path: String) throws(MountProblem) -> Int32 {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw .mountFailed("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        let fd = snapfs_openat(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        var st = stat()
        guard fd >= 0, fstat(fd, &st) == 0 else {
            throw .mountFailed("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard st.st_uid == 0, st.st_mode & 0o022 == 0 else {
            close(fd)
            throw .mountFailed("\(path) must be a directory owned by root and writable by root alone")
        }
        return fd
    }

    private static func lock(_ fd: Int32, backing: String, writesPid: Bool) throws(MountProblem) -> BackingLock {
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let error = errno
            let holder = writesPid ? readPid(fd) : nil
            close(fd)
            if error == EWOULDBLOCK {
                throw .backingInUse(backing: backing, why: holder.map { "by daemon pid \($0)" } ?? "by another daemon")
            }
            throw .mountFailed("cannot lock backing directory \(backing): \(String(cString: strerror(error)))")
        }
        if writesPid {
            let text = Array("\(getpid())\n".utf8)
            _ = ftruncate(fd, 0)
            _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        }
        return BackingLock(fd: fd)
    }

    private static func readPid(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buffer[0..<n], as: UTF8.self).trimmingWhitespace)
    }
}

private extension String {
    var trimmingWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
