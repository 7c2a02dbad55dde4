/// What a clone made: entries by kind, and the sum of `st_size` over regular files (every
/// name counted, so two hard links to one file count twice).
public struct CloneStatistics: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    /// Device nodes, FIFOs and sockets.
    public var specials = 0
    public var bytes: Int64 = 0

    public init(files: Int = 0, directories: Int = 0, symlinks: Int = 0, specials: Int = 0, bytes: Int64 = 0) {
        self.files = files
        self.directories = directories
        self.symlinks = symlinks
        self.specials = specials
        self.bytes = bytes
    }

    static func += (left: inout CloneStatistics, right: CloneStatistics) {
        left.files += right.files
        left.directories += right.directories
        left.symlinks += right.symlinks
        left.specials += right.specials
        left.bytes += right.bytes
    }
}
