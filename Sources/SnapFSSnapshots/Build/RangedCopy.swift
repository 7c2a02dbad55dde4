import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// A background build's copy of a large file that was open for writing at the epoch (a
/// database, most often), filled chunk by chunk instead of linked or copied whole.
///
/// A hard-link snapshot that linked such a file would have its next write copy it up
/// whole, and a copy snapshot would copy it whole before that write could go on: either
/// way the writer waits for the file's size. Here the copy is made at its capture as an
/// empty file of the size at the epoch; a change first copies the chunks it is about to
/// overwrite (or cut off), and the build copies the rest. The live file is never shared,
/// so no copy-up follows. Chunks past the size at the epoch hold nothing of it.
final class RangedCopy: @unchecked Sendable {
    /// Files at least this large that are open for writing are copied by chunks.
    static let threshold: Int64 = 1 << 20
    /// A change waits for the chunks it touches: a SQLite page costs one 256 KiB copy.
    static let chunk: Int64 = 256 << 10

    /// The live file (read only) and the copy (write only); closed by ``finish()``.
    private var source: Int32
    private var target: Int32
    /// The file at the epoch: its size, and what is applied to the copy at the end.
    let status: stat
    private let attributes: [(name: [CChar], value: [UInt8])]
    private let monitor = Monitor()
    private var copied: [Bool]
    /// For filesystems without `copy_file_range` between the two files.
    private var buffer: UnsafeMutableRawBufferPointer?

    /// Takes both descriptors.
    init(source: Int32, target: Int32, status: stat, attributes: [(name: [CChar], value: [UInt8])]) {
        self.source = source
        self.target = target
        self.status = status
        self.attributes = attributes
        let size = Int64(status.st_size)
        copied = Array(repeating: false, count: Int((size + Self.chunk - 1) / Self.chunk))
    }

    deinit {
        closeDescriptors()
        buffer?.deallocate()
    }

    /// Copies the chunks of `offset ..< offset + length` not yet copied.
    func ensure(from offset: Int64, length: Int64) throws(Errno) {
        let size = Int64(status.st_size)
        guard length > 0, offset < size else { return }
        let first = Int(max(offset, 0) / Self.chunk)
        let last = Int((min(offset + length, size) - 1) / Self.chunk)
        monitor.lock()
        defer { monitor.unlock() }
        for index in first...last where !copied[index] { try copy(index) }
    }

    /// Copies every chunk left, one lock at a time, so that changes go on in between. The
    /// copy never has more than two chunks being written to the disk: each chunk's
    /// write-back starts at once, and the one before it is waited for (outside the lock).
    /// ext4 writes the ordered data of every file with the journal commit a writer's
    /// `fsync` makes, so the copy's dirty pages would otherwise be that writer's wait
    /// (a commit on a 100 MB database waited 78–165 ms while its copy filled unbounded).
    func fill() throws(Errno) {
        var previous: Int64?
        for index in copied.indices {
            let start = Int64(index) * Self.chunk
            do {
                monitor.lock()
                defer { monitor.unlock() }
                if copied[index] { continue }
                try copy(index)
                _ = snapfs_start_writeback(target, off_t(start), off_t(Self.chunk))
            }
            if let previous { _ = snapfs_write_back_range(target, off_t(previous), off_t(Self.chunk)) }
            previous = start
        }
    }

    /// Gives the copy the file's owner, extended attributes, mode and times at the epoch,
    /// and closes both descriptors; once (after ``fill()``: no chunk is left to copy).
    func finish() throws(Errno) {
        monitor.lock()
        defer { monitor.unlock() }
        guard target >= 0 else { return }
        defer { closeDescriptors() }
        if status.st_uid != geteuid() || status.st_gid != getegid() { try syscall(fchown(target, status.st_uid, status.st_gid)) }
        try ExtendedAttributes.write(attributes, to: .descriptor(target))
        try syscall(fchmod(target, status.st_mode & 0o7777))
        var times = [status.st_atim, status.st_mtim]
        try syscall(futimens(target, &times))
    }

    /// The copy is not wanted (the walk never placed it: the file is excluded): no chunk
    /// is copied from now on, and both descriptors are closed.
    func abandon() {
        monitor.lock()
        defer { monitor.unlock() }
        for index in copied.indices { copied[index] = true }
        closeDescriptors()
    }

    func closeDescriptors() {
        if source >= 0 { close(source) }
        if target >= 0 { close(target) }
        source = -1
        target = -1
    }

    private func copy(_ index: Int) throws(Errno) {
        let start = Int64(index) * Self.chunk
        let end = min(start + Self.chunk, Int64(status.st_size))
        // Where the live file is shorter now, the rest stays a hole (it is cut off anyway).
        try FileCopy.copyRange(from: source, to: target, offset: start, length: end - start, buffer: &buffer)
        copied[index] = true
    }
}
