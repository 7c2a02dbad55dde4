import CLinux
import Glibc
import SnapFSBacking
import Synchronization
import SystemPackage

/// One snapshot found in `.snapshots`.
public struct SnapshotEntry: Equatable, Sendable {
    public let name: SnapshotName
    /// The content of `.meta/NAME.json`, or nil if it is missing or unreadable; the snapshot
    /// still lists, with what its name tells.
    public let metadata: SnapshotMetadata?
    /// On the disk for sure (see ``DurabilityMarker``); false for a snapshot published less
    /// than a batch delay ago, which a power cut may leave incomplete.
    public let durable: Bool

    public init(name: SnapshotName, metadata: SnapshotMetadata?, durable: Bool = true) {
        self.name = name
        self.metadata = metadata
        self.durable = durable
    }

    /// Protected from pruning; a snapshot without metadata is not held.
    public var held: Bool { metadata?.held ?? false }

    /// The metadata, or what can be said from the name alone (unknown trigger and strategy,
    /// zero counts) when there is none.
    public var metadataOrReconstructed: SnapshotMetadata {
        metadata ?? SnapshotMetadata(name: name, trigger: Trigger(kind: .unknown), strategy: "unknown")
    }

    /// ``metadataOrReconstructed`` with ``SnapshotMetadata/durable`` set, for `list --json`.
    public var listed: SnapshotMetadata {
        var listed = metadataOrReconstructed
        listed.durable = durable
        return listed
    }
}

/// The snapshots of one backing directory: the `.snapshots` directory read as the backing
/// layout describes it, by the daemon or (through the mount or directly) by the CLI.
///
/// ```
/// .snapshots/NAME/              a snapshot's tree
/// .snapshots/.meta/NAME.json    its metadata
/// .snapshots/.meta/durable      the newest durable snapshot (``DurabilityMarker``)
/// .snapshots/.building-NAME/    a snapshot under construction, or a crash's leftover
/// ```
/// Entries whose names do not parse as ``SnapshotName``, or that are not directories, are
/// ignored.
public final class SnapshotCatalog: Sendable {
    /// The directory of snapshots at the root of the backing directory and of the mount.
    public static let directoryName = ".snapshots"
    /// The directory of metadata files inside ``directoryName``.
    public static let metadataDirectoryName = ".meta"
    /// Everyone may read a snapshot's metadata by name (unless it names paths, see
    /// ``SnapshotMetadata/fileMode``); nobody but root may list the directory.
    public static let metadataDirectoryMode: mode_t = 0o711
    /// The prefix of a snapshot tree under construction.
    public static let buildingPrefix = ".building-"

    /// The `.snapshots` directory.
    public let directoryFD: Int32
    private let ownsDescriptor: Bool
    /// The metadata read so far, by snapshot name, with the identity of the file it came
    /// from (a metadata file is replaced, never rewritten in place, so a changed file is a
    /// new inode). Retention lists the catalog after every tenth commit snapshot; decoding
    /// every snapshot's JSON each time took a third of the daemon's time with a snapshot at
    /// every commit. Holds the names of the last listing, no more.
    private let metadataCache = Mutex<[String: (file: MetadataFileKey, metadata: SnapshotMetadata)]>([:])

    /// A catalog over an open `.snapshots` directory (may be `O_PATH`); the caller keeps
    /// ownership of `directoryFD`.
    public init(directoryFD: Int32) {
        self.directoryFD = directoryFD
        ownsDescriptor = false
    }

    /// A catalog over the `.snapshots` directory at `path`, which it opens and closes.
    public init(path: String) throws(Errno) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw Errno.current }
        directoryFD = fd
        ownsDescriptor = true
    }

    deinit {
        if ownsDescriptor { close(directoryFD) }
    }

    /// All snapshots, oldest first.
    public func list() throws(Errno) -> [SnapshotEntry] {
        let metadataFD = openMetadataDirectory(create: false)
        defer { if metadataFD >= 0 { close(metadataFD) } }
        let marker = DurabilityMarker.read(metadataFD: metadataFD)
        var entries: [SnapshotEntry] = []
        var seen = Set<String>()
        for raw in try DirectoryNames.utf8Names(in: directoryFD) {
            guard let name = SnapshotName(parsing: raw), isDirectory(raw) else { continue }
            entries.append(SnapshotEntry(name: name, metadata: readMetadata(raw, metadataFD: metadataFD),
                                         durable: marker.covers(name)))
            seen.insert(raw)
        }
        metadataCache.withLock { cache in
            if cache.count > seen.count { cache = cache.filter { seen.contains($0.key) } }
        }
        return entries.sorted { $0.name < $1.name }
    }

    /// The snapshot called `name`, or nil if there is none.
    public func find(_ name: String) -> SnapshotEntry? {
        guard let parsed = SnapshotName(parsing: name), isDirectory(name) else { return nil }
        let metadataFD = openMetadataDirectory(create: false)
        defer { if metadataFD >= 0 { close(metadataFD) } }
        return SnapshotEntry(name: parsed, metadata: readMetadata(name, metadataFD: metadataFD),
                             durable: DurabilityMarker.read(metadataFD: metadataFD).covers(parsed))
    }

    /// The newest snapshot, or nil if there is none. Reads the names, and the metadata of
    /// that one snapshot only: a snapshot asks for it with the gate closed, whatever the
    /// number of snapshots kept.
    public func newest() throws(Errno) -> SnapshotEntry? {
        let names = try DirectoryNames.utf8Names(in: directoryFD)
            .compactMap { raw in SnapshotName(parsing: raw).map { ($0, raw) } }
            .sorted { $0.0 > $1.0 }
        guard let (_, raw) = names.first(where: { isDirectory($0.1) }) else { return nil }
        return find(raw)
    }

    /// Sets or clears `held` in the metadata of `name`, rewriting it atomically (a snapshot
    /// without metadata gets the reconstructed one). Returns the new metadata; throws ENOENT
    /// if there is no such snapshot.
    @discardableResult
    public func setHeld(_ held: Bool, name: String, durable: Bool = true) throws(Errno) -> SnapshotMetadata {
        guard let entry = find(name) else { throw Errno.noSuchFileOrDirectory }
        var metadata = entry.metadataOrReconstructed
        metadata.held = held
        try writeMetadata(metadata, durable: durable)
        return metadata
    }

    /// Writes a snapshot's metadata atomically into `.meta`, creating `.meta` if needed.
    public func writeMetadata(_ metadata: SnapshotMetadata, durable: Bool = true) throws(Errno) {
        let metadataFD = openMetadataDirectory(create: true)
        if metadataFD < 0 { throw Errno.current }
        defer { close(metadataFD) }
        try metadata.write(into: metadataFD, durable: durable)
    }

    /// Names of the `.building-*` entries (the part after the prefix): snapshots under
    /// construction, or leftovers of a crash to remove at mount.
    public func buildingLeftovers() throws(Errno) -> [String] {
        try DirectoryNames.utf8Names(in: directoryFD)
            .filter { $0.hasPrefix(Self.buildingPrefix) }
            .map { String($0.dropFirst(Self.buildingPrefix.count)) }
            .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// Takes the snapshot `name` out of the list in one step: renamed to
    /// `.building-NAME`, which the next mount removes should a crash leave it. Its top is
    /// unsealed first (an immutable directory cannot be renamed). Returns the new name.
    func hide(_ name: String) throws(Errno) -> String {
        let hidden = Self.buildingPrefix + name
        _ = try name.withCName { (cName) throws(Errno) in try Seal.remove(cName, in: directoryFD) }
        try syscall(renameat(directoryFD, name, directoryFD, hidden))
        return hidden
    }

    // MARK: Helpers

    private func isDirectory(_ name: String) -> Bool {
        var st = stat()
        return fstatat(directoryFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.isDirectory
    }

    /// `.meta` opened for reading, or -1 (with errno set) if it cannot be.
    private func openMetadataDirectory(create: Bool) -> Int32 {
        // Readers reach files by name only (`.meta` is 0711 for other users): O_PATH.
        let flags = (create ? O_RDONLY : SNAPFS_O_PATH) | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW
        let fd = snapfs_openat(directoryFD, Self.metadataDirectoryName, flags, 0)
        if fd >= 0 || !create || errno != ENOENT { return fd }
        if mkdirat(directoryFD, Self.metadataDirectoryName, Self.metadataDirectoryMode) != 0 && errno != EEXIST { return -1 }
        return snapfs_openat(directoryFD, Self.metadataDirectoryName, flags, 0)
    }

    private func readMetadata(_ name: String, metadataFD: Int32) -> SnapshotMetadata? {
        guard metadataFD >= 0 else { return nil }
        var st = stat()
        let fileName = SnapshotMetadata.fileName(for: name)
        guard fstatat(metadataFD, fileName, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        let key = MetadataFileKey(st)
        if let cached = metadataCache.withLock({ $0[name] }), cached.file == key { return cached.metadata }
        guard let metadata = try? SnapshotMetadata.read(named: name, from: metadataFD),
              metadata.name.utf8.elementsEqual(name.utf8) else { return nil }
        metadataCache.withLock { $0[name] = (key, metadata) }
        return metadata
    }
}

/// Which metadata file was read: replaced files (atomic renames) differ in inode, and a
/// file changed in place in its size or times.
private struct MetadataFileKey: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    // Seconds and nanoseconds kept apart: any time a file can have (in nanoseconds alone,
    // one past 2262 overflows).
    let modifiedSeconds: Int
    let modifiedNanoseconds: Int
    let changedSeconds: Int
    let changedNanoseconds: Int

    init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        (modifiedSeconds, modifiedNanoseconds) = (st.st_mtim.tv_sec, st.st_mtim.tv_nsec)
        (changedSeconds, changedNanoseconds) = (st.st_ctim.tv_sec, st.st_ctim.tv_nsec)
    }
}
