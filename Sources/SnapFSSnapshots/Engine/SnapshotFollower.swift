/// A part that follows a mount's snapshots from outside the engine (replication to a
/// repository), attached with ``SnapshotEngine/attach(follower:)``.
public protocol SnapshotFollower: AnyObject, Sendable {
    /// A snapshot was published. Called with the engine's serial lock held: it must only
    /// note the fact (wake a thread), never wait.
    func snapshotPublished(_ metadata: SnapshotMetadata)
    /// Its `status` lines, given the snapshots the engine lists for its own.
    func statusLines(_ entries: [SnapshotEntry]) -> [String]
    /// Of `entries`, the names the retention rules must keep as if held: snapshots the
    /// follower has yet to send.
    func mustKeep(_ entries: [SnapshotEntry]) -> Set<String>
}
