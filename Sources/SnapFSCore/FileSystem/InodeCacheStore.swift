import CLinux
import Glibc
import SnapFSBacking
import SnapFSCache
import SystemPackage

/// The page cache's view of the backing files: a cache key is a FUSE node id, and its
/// backing file is whatever object the inode stands for now (copy-up moves it).
///
/// I/O goes through a descriptor of one of the inode's open files, held open for the
/// call; when none can do it (write-back retried after the last close, a size asked for
/// by getattr), the inode's `O_PATH` handle is reopened for the call. Called with the
/// cache's lock held: it locks only the inode (lock order: cache, then inode).
struct InodeCacheStore: CacheBackingStore {
    let inodes: InodeTable
    let proc: ProcSelfFD

    private func withDescriptor<R>(_ file: UInt64, writable: Bool, _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        let node = try inodes.inode(file)
        if let result = try node.withOpenDescriptor(writable: writable, body) { return result }
        let fd = try node.withFD { (pathFD) throws(Errno) in try proc.reopen(pathFD, flags: writable ? O_WRONLY : O_RDONLY) }
        defer { close(fd) }
        return try body(fd)
    }

    func read(_ file: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try withDescriptor(file, writable: false) { (fd) throws(Errno) -> Int in
            try syscallRetrying { pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
        }
    }

    func write(_ file: UInt64, _ data: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) -> Int {
        try withDescriptor(file, writable: true) { (fd) throws(Errno) -> Int in
            try CallerIdentity.allocating(asOwnerOf: fd) { () throws(Errno) in
                try syscallRetrying { pwrite(fd, data.baseAddress, data.count, off_t(offset)) }
            }
        }
    }

    func write(_ file: UInt64, _ segments: [UnsafeRawBufferPointer], at offset: Int64) throws(Errno) -> Int {
        var vectors = segments.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        return try withDescriptor(file, writable: true) { (fd) throws(Errno) -> Int in
            try CallerIdentity.allocating(asOwnerOf: fd) { () throws(Errno) in
                try syscallRetrying { pwritev(fd, &vectors, Int32(vectors.count), off_t(offset)) }
            }
        }
    }

    func sync(_ file: UInt64, dataOnly: Bool) throws(Errno) {
        try withDescriptor(file, writable: true) { (fd) throws(Errno) in
            _ = try syscallRetrying { dataOnly ? fdatasync(fd) : fsync(fd) }
        }
    }

    func size(_ file: UInt64) throws(Errno) -> Int64 {
        let node = try inodes.inode(file)
        return Int64(try node.withFD { (fd) throws(Errno) in try FileStatus.of(fd) }.st_size)
    }

    func truncate(_ file: UInt64, to size: Int64) throws(Errno) {
        try withDescriptor(file, writable: true) { (fd) throws(Errno) in
            _ = try syscallRetrying { ftruncate(fd, off_t(size)) }
        }
    }
}
