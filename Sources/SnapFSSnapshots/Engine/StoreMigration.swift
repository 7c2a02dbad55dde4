import CLinux
import Glibc
import Logging
import SnapFSBacking
import SystemPackage

/// Brings the snapshots of a store made by an earlier snapfs to what this one promises:
/// every database in them opens read-only (WAL companions added, hot journals played back,
/// see ``SQLiteCompanion`` and ``HotJournal``), and they are sealed against change (see
/// ``Seal``; SQLite's companion files a hard-link snapshot shares with the live tree are
/// replaced by copies of their own first). Done once per store, at mount: `.meta/format`
/// records that it was.
enum StoreMigration {
    static let formatFile = "format"
    /// 2: snapshots are sealed and hold readable databases.
    static let currentFormat = 2

    /// Migrates the snapshots of `catalog` unless the store says it is current; returns a
    /// note for the log, if there was anything to do.
    static func run(_ catalog: SnapshotCatalog, logger: Logger) throws(SnapshotFailure) -> String? {
        let meta = snapfs_openat(catalog.directoryFD, SnapshotCatalog.metadataDirectoryName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard meta >= 0 else { throw SnapshotFailure(Errno.current, "cannot open \(ReservedName.snapshots)/\(SnapshotCatalog.metadataDirectoryName)") }
        defer { close(meta) }
        if format(in: meta) >= currentFormat { return nil }
        let entries: [SnapshotEntry]
        do throws(Errno) { entries = try catalog.list() } catch { throw SnapshotFailure(error, "cannot list \(ReservedName.snapshots)") }
        var migrated = 0
        for entry in entries {
            do throws(Errno) {
                try migrate(entry.name.description, in: catalog.directoryFD)
                migrated += 1
            } catch {
                logger.warning("snapshot \(entry.name) of an earlier snapfs could not be brought up to date: \(error)")
            }
        }
        do throws(Errno) { try writeFormat(in: meta) } catch {
            throw SnapshotFailure(error, "cannot write \(ReservedName.snapshots)/\(SnapshotCatalog.metadataDirectoryName)/\(formatFile): \(error)")
        }
        return entries.isEmpty ? nil
            : "brought \(migrated) of \(entries.count) snapshot(s) made by an earlier snapfs up to date (databases readable read-only, sealed)"
    }

    private static func migrate(_ name: String, in store: Int32) throws(Errno) {
        let top = try name.withCName { (cName) throws(Errno) in
            try syscall(snapfs_openat(store, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0))
        }
        defer { close(top) }
        let noAccessTime = geteuid() == 0 ? SNAPFS_O_NOATIME : 0
        if BtrfsSubvolume.isSubvolumeRoot(top) {
            // A read-only subvolume: made writable for the change, then read-only again.
            var flags: UInt64 = 0
            try syscall(snapfs_btrfs_get_subvolume_flags(top, &flags))
            if flags & SNAPFS_BTRFS_SUBVOL_RDONLY != 0 { try syscall(snapfs_btrfs_set_subvolume_flags(top, flags & ~SNAPFS_BTRFS_SUBVOL_RDONLY)) }
            defer { _ = snapfs_btrfs_set_subvolume_flags(top, flags | SNAPFS_BTRFS_SUBVOL_RDONLY) }
            try SQLiteCompanion.addToTree(top, noAccessTime: noAccessTime)
            return
        }
        _ = try Seal.remove(top)
        try SQLiteCompanion.addToTree(top, noAccessTime: noAccessTime)
        try sealTree(top, noAccessTime: noAccessTime)
    }

    /// Seals every directory below `top` and `top` itself, and the companion files that are
    /// the snapshot's own (shared ones are copied first). A cursor walk: bounded descriptors.
    private static func sealTree(_ top: Int32, noAccessTime: Int32) throws(Errno) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        try DirectoryCursor(at: top, extraFlags: noAccessTime).walk(
            enter: { (cursor) throws(Errno) in try sealEntries(cursor, buffer) },
            leave: { (cursor) throws(Errno) in try Seal.apply(cursor.fd) })
    }

    /// Seals the companion files of the directory at `cursor`; returns its subdirectories.
    private static func sealEntries(_ cursor: DirectoryCursor, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> [[UInt8]] {
        var subdirectories: [[UInt8]] = []
        var companions: [[CChar]] = []
        let dir = cursor.fd
        try syscall(lseek(dir, 0, SEEK_SET))
        try DirectoryEntries.forEach(in: dir, buffer: buffer) { (name, type) throws(Errno) in
            var kind = type
            if kind == DirectoryEntries.Kind.unknown {
                var status = stat()
                try syscall(fstatat(dir, name, &status, AT_SYMLINK_NOFOLLOW))
                kind = DirectoryEntries.Kind.of(mode: status.st_mode)
            }
            if kind == DirectoryEntries.Kind.directory {
                subdirectories.append(Array(UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self), count: strlen(name))))
            } else if kind == DirectoryEntries.Kind.regular && SQLiteCompanion.isCompanionName(name) {
                companions.append(Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1)))
            } else if kind == DirectoryEntries.Kind.regular {
                // A database of the snapshot's own (not shared with the live tree) is sealed too.
                var status = stat()
                guard fstatat(dir, name, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_nlink == 1,
                      SQLiteCompanion.mayBeDatabase(status) else { return }
                let fd = snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0)
                guard fd >= 0 else { return }
                defer { close(fd) }
                if SQLiteCompanion.databaseKind(fd) != .none { try Seal.apply(fd) }
            }
        }
        for name in companions {
            var status = stat()
            guard fstatat(dir, name, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            let fd: Int32
            if status.st_nlink > 1 {
                fd = try HotJournal.privateCopy(name, in: dir, status: status)
                var times = [status.st_atim, status.st_mtim]
                _ = futimens(fd, &times)
            } else {
                fd = try syscall(snapfs_openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0))
            }
            defer { close(fd) }
            try Seal.apply(fd)
        }
        if !companions.isEmpty {
            var times = [cursor.status.st_atim, cursor.status.st_mtim]
            try syscall(futimens(dir, &times))
        }
        return subdirectories
    }

    static func format(in meta: Int32) -> Int {
        let fd = snapfs_openat(meta, formatFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 { return 1 }
        defer { close(fd) }
        let digits = readToEnd(fd).prefix(16).prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return Int(String(decoding: digits, as: UTF8.self)) ?? 1
    }

    static func writeFormat(in meta: Int32) throws(Errno) {
        try replaceDurably(formatFile, in: meta, with: Array("\(currentFormat)\n".utf8), temporary: ".\(formatFile).tmp")
    }
}
