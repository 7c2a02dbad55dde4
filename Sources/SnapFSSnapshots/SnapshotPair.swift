/// A snapshot's place in a pre/post pair: `snapfs snapshot MOUNT --label L -- COMMAND`
/// takes one snapshot before the command and one after it (as snapper's pre and post
/// snapshots), so that `snapfs diff MOUNT --pair L` shows what the command changed.
///
/// Stored in the metadata as `"pair": {"role": "pre" | "post", "pre": NAME, "post": NAME}`.
/// A pre snapshot names itself as `pre` and has no `post` (it is taken before its post
/// exists); a post names its pre and itself, so the link is kept in the later one and
/// survives however the two are listed. `snapfs list` fills in a pre's `post` from the post
/// that names it.
public struct SnapshotPair: Codable, Equatable, Sendable {
    /// Which of the two snapshots this one is.
    public enum Role: String, Codable, Sendable {
        case pre
        case post
    }

    public var role: Role
    /// The pre snapshot's name (a pre's own).
    public var pre: String?
    /// The post snapshot's name (a post's own; for a pre, nil in the file, and set by
    /// ``completed(_:)`` when its post exists).
    public var post: String?

    public init(role: Role, pre: String? = nil, post: String? = nil) {
        self.role = role
        self.pre = pre
        self.post = post
    }

    private enum CodingKeys: String, CodingKey { case role, pre, post }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        role = try c.decode(Role.self, forKey: .role)
        pre = try c.decodeIfPresent(String.self, forKey: .pre)
        post = try c.decodeIfPresent(String.self, forKey: .post)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(role, forKey: .role)
        // The format shows absent values as null rather than leaving the key out.
        try c.encode(pre, forKey: .pre)
        try c.encode(post, forKey: .post)
    }

    // MARK: The control file's option

    /// The control file's `--pair=` value: `pre`, or `post:PRE` naming the pre snapshot.
    public var argument: String {
        switch role {
        case .pre: "pre"
        case .post: "post:" + (pre ?? "")
        }
    }

    /// Parses a `--pair=` value; nil unless it is `pre`, or `post:NAME` with NAME a snapshot
    /// name (the pre snapshot's).
    public init?(argument: String) {
        if argument == "pre" {
            self.init(role: .pre)
            return
        }
        guard argument.hasPrefix("post:") else { return nil }
        let pre = String(argument.dropFirst("post:".count))
        guard SnapshotName(parsing: pre) != nil else { return nil }
        self.init(role: .post, pre: pre)
    }

    // MARK: Finding pairs

    /// The pairs among `entries` (oldest first, as a catalog lists them): each pre with the
    /// post that names it, or nil when it has none (the command still runs, or the post
    /// snapshot failed or was deleted). A post whose pre is gone is in no pair.
    public static func pairs(in entries: [SnapshotEntry]) -> [(pre: SnapshotEntry, post: SnapshotEntry?)] {
        var posts: [String: SnapshotEntry] = [:]
        for entry in entries {
            guard let pair = entry.metadata?.pair, pair.role == .post, let pre = pair.pre else { continue }
            // Two posts naming one pre (hand-made metadata): the newer one counts.
            posts[pre] = entry
        }
        return entries.compactMap { entry in
            guard entry.metadata?.pair?.role == .pre else { return nil }
            return (entry, posts[entry.name.description])
        }
    }

    /// The pair that `key` names: the pair one of whose snapshots is called `key`, else the
    /// newest pair whose pre snapshot has the label `key`; nil if there is none.
    public static func find(_ key: String, in entries: [SnapshotEntry]) -> (pre: SnapshotEntry, post: SnapshotEntry?)? {
        let all = pairs(in: entries)
        if let named = all.first(where: { $0.pre.name.description == key || $0.post?.name.description == key }) {
            return named
        }
        return all.last { $0.pre.name.label == key }
    }

    /// ``SnapshotEntry/listed`` for each entry, with each pre's `post` filled in from its
    /// post snapshot: what `list --json` prints.
    public static func completed(_ entries: [SnapshotEntry]) -> [SnapshotMetadata] {
        var postOf: [String: String] = [:]
        for (pre, post) in pairs(in: entries) {
            if let post { postOf[pre.name.description] = post.name.description }
        }
        return entries.map { entry in
            var listed = entry.listed
            if listed.pair?.role == .pre { listed.pair?.post = postOf[entry.name.description] }
            return listed
        }
    }
}
