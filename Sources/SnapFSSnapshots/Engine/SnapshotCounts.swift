import Synchronization

/// Snapshots made and failed since the mount, by the kind of their trigger: the
/// `snapshots-made` and `snapshots-failed` status lines (and so the metrics' counters).
///
/// A snapshot not taken to keep the free space floor is no failure: it is counted by
/// `skipped-for-space`. An unchanged tree (no snapshot needed) is neither.
public final class SnapshotCounts: Sendable {
    /// The kinds counted, in the order the status lines give them.
    static let kinds = Trigger.Kind.allCases
    private let madeCounts: InlineArray<8, Atomic<UInt64>>
    private let failedCounts: InlineArray<8, Atomic<UInt64>>

    public init() {
        precondition(Self.kinds.count <= 8)
        madeCounts = InlineArray { _ in Atomic(0) }
        failedCounts = InlineArray { _ in Atomic(0) }
    }

    func countMade(_ kind: Trigger.Kind) {
        madeCounts[Self.slot(kind)].wrappingAdd(1, ordering: .relaxed)
    }

    func countFailed(_ kind: Trigger.Kind, _ failure: SnapshotFailure) {
        guard !failure.skippedForSpace else { return }
        failedCounts[Self.slot(kind)].wrappingAdd(1, ordering: .relaxed)
    }

    public func made(_ kind: Trigger.Kind) -> UInt64 { madeCounts[Self.slot(kind)].load(ordering: .relaxed) }
    public func failed(_ kind: Trigger.Kind) -> UInt64 { failedCounts[Self.slot(kind)].load(ordering: .relaxed) }

    /// `snapshots-made: control=0 command=2 …` and `snapshots-failed: …`, every kind listed.
    func statusLines() -> [String] {
        [("snapshots-made", made(_:)), ("snapshots-failed", failed(_:))].map { key, count in
            "\(key): " + Self.kinds.map { "\($0.rawValue)=\(count($0))" }.joined(separator: " ")
        }
    }

    private static func slot(_ kind: Trigger.Kind) -> Int { kinds.firstIndex(of: kind)! }
}
