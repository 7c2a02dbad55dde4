/// Why replicating, listing or restoring through restic failed, as one sentence for the user.
public struct ReplicationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// `restic` is not installed (not on PATH).
        case resticMissing
        /// No repository password was given.
        case noPassword
        /// restic found no key that the password opens.
        case wrongPassword
        /// There is no repository at the location.
        case noRepository
        /// The repository's server did not answer.
        case unreachable
        /// A snapshot or path asked for is not in the repository.
        case notFound
        /// Bad input of the user's (a target directory that is not empty, …).
        case usage
        /// Anything else restic or the system refused.
        case failed
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// The failure restic's standard error describes, for a command that exited with
    /// `status` on the repository shown as `repository` (already without credentials).
    static func restic(status: Int32, errorText: String, repository: String) -> ReplicationError {
        let text = Redaction.userinfo(errorText)
        let lines = text.split(separator: "\n").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        let fatal = lines.last { $0.hasPrefix("Fatal:") }.map { String($0.dropFirst(6)).trimmingWhitespace() }
        let reason = fatal ?? lines.last ?? "no message"
        let lower = text.lowercased()
        if lower.contains("wrong password") {
            return ReplicationError(.wrongPassword, "wrong password for the repository \(repository) (no key opens it)")
        }
        for sign in ["connection refused", "dial tcp", "no such host", "i/o timeout", "network is unreachable",
                     "connection reset", "tls handshake", "no route to host"] where lower.contains(sign) {
            return ReplicationError(.unreachable, "cannot reach the repository \(repository): \(reason)")
        }
        if let locked = lines.first(where: { $0.contains("already locked") }) {
            let detail = locked.hasPrefix("Fatal:") ? String(locked.dropFirst(6)).trimmingWhitespace() : locked
            return ReplicationError(.failed, "the repository \(repository) is locked by another restic (\(detail)); try again once it is done")
        }
                if lower.contains("is there a repository at the following location") || lower.contains("repository does not exist") {
            return ReplicationError(.noRepository, "there is no restic repository at \(repository) (\(reason)); create one with snapfs replicate --init, or restic init")
        }
        return ReplicationError(.failed, "restic failed (exit \(status)) on \(repository): \(reason)")
    }
}

/// Hides credentials written into a location (`rest:https://user:secret@host/`,
/// `sftp:user@host:/srv`): the part between `://` and `@` in a URL becomes `***`.
public enum Redaction {
    public static func userinfo(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let scheme = rest.firstRange(of: "://") {
            result += rest[..<scheme.upperBound]
            rest = rest[scheme.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == " " || $0 == "\"" || $0 == "\n" } ?? rest.endIndex
            if let at = rest[..<authorityEnd].lastIndex(of: "@") {
                result += "***"
                rest = rest[at...]
            }
        }
        return result + rest
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var s = self
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    func trimmingWhitespace() -> String { Substring(self).trimmingWhitespace() }
}
