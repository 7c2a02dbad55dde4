import Glibc
import SnapFSBacking

/// The free space that snapshots leave to users (`min_free=`, `--min-free`): a share of the
/// backing filesystem or a size. A snapshot that would bring the space available to
/// unprivileged users (`f_bavail`, which excludes the blocks ext4 keeps for root) below it
/// is not taken; the same share of inodes is kept too, where the filesystem counts them.
///
/// Any user can trigger snapshots (a SQLite commit is enough), and the daemon writes them as
/// root: without a floor, snapshots could take the last of the disk from everyone.
public struct SpaceFloor: Sendable, Equatable, CustomStringConvertible {
    public enum Amount: Sendable, Equatable {
        case percent(Double)
        case bytes(Int64)
    }

    public var amount: Amount

    /// 5%: ext4 keeps 5% for root, ZFS about 3% (1/32) of a pool for itself. Measured
    /// against what users may use, so the floor is what snapshots always leave to users.
    public static let `default` = SpaceFloor(.percent(5))

    public init(_ amount: Amount) {
        self.amount = amount
    }

    /// `5%`, `2.5%`, `0`, or a size (`512M`, `2G`, bytes).
    public init?(parsing text: String) {
        if text.hasSuffix("%") {
            guard let value = Double(text.dropLast()), value.isFinite, value >= 0, value <= 100 else { return nil }
            amount = .percent(value)
        } else if let bytes = ByteSize.parse(text) {
            amount = .bytes(Int64(bytes))
        } else {
            return nil
        }
    }

    public var description: String {
        switch amount {
        case .percent(let value): value == value.rounded() ? "\(Int(value))%" : "\(value)%"
        case .bytes(let value): "\(value)"
        }
    }

    /// Bytes to keep free on a filesystem of `total` bytes.
    public func bytes(ofTotal total: Int64) -> Int64 {
        switch amount {
        case .percent(let value): Int64((Double(total) * value / 100).rounded(.up))
        case .bytes(let value): min(value, total)
        }
    }

    /// The bytes free to unprivileged users on the filesystem of `fd`, and this floor in
    /// bytes there (nil when the filesystem cannot tell); for `status`.
    func freeAndFloor(on fd: Int32) -> (free: Int64, floor: Int64)? {
        measure(fd).map { ($0.available, $0.floor) }
    }

    /// The filesystem of `fd`: its statistics, size and bytes available in bytes, and this floor.
    private func measure(_ fd: Int32) -> (fs: statvfs, total: Int64, available: Int64, floor: Int64)? {
        var fs = statvfs()
        guard fstatvfs(fd, &fs) == 0 else { return nil }
        let unit = Int64(fs.f_frsize > 0 ? fs.f_frsize : fs.f_bsize)
        let total = Int64(fs.f_blocks) * unit
        return (fs, total, Int64(fs.f_bavail) * unit, bytes(ofTotal: total))
    }

    /// Why a snapshot of about `bytes` and `inodes` would go below the floor on the
    /// filesystem of `fd`, or nil if it would not (or the filesystem cannot tell).
    func shortfall(on fd: Int32, adding bytes: Int64, inodes: Int64) -> String? {
        guard let (fs, total, available, floor) = measure(fd) else { return nil }
        if floor > 0 && available - bytes < floor {
            return "\(Self.size(available)) free of \(Self.size(total)), a snapshot of about \(Self.size(bytes)) would go below min_free=\(self) (\(Self.size(floor)))"
        }
        // Filesystems with no fixed inode count (btrfs) report 0.
        if fs.f_files > 0 && floor > 0 && total > 0 {
            let inodeFloor = Int64((Double(fs.f_files) * Double(floor) / Double(total)).rounded(.up))
            if Int64(fs.f_favail) - inodes < inodeFloor {
                return "\(fs.f_favail) inodes free of \(fs.f_files), a snapshot of about \(inodes) would go below min_free=\(self) (\(inodeFloor) inodes)"
            }
        }
        return nil
    }

    private static func size(_ bytes: Int64) -> String {
        let mib = Double(bytes) / 1_048_576
        return mib >= 10 ? "\(Int64(mib.rounded())) MiB" : "\((mib * 10).rounded() / 10) MiB"
    }
}
