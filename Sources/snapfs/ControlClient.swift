import CLinux
import Glibc
import SnapFSDaemon
import SnapFSSnapshots

/// A client of the control file `MOUNT/.snapfs-control`: one command per `write()`, then the
/// outcome and the status read back from offset 0 of the same open file.
struct ControlClient {
    /// The control file's name at the root of a mount.
    static let fileName = ".snapfs-control"

    /// What the daemon answered.
    struct Reply {
        /// The words of the `result:` line (`ok snapshot NAME`, `error ENOENT no snapshot …`).
        var result: [Substring]
        /// The other `key: value` lines, in order.
        var status: [(key: String, value: String)]
        /// The errno of a failed `write()`, or nil.
        var writeError: Int32?

        var succeeded: Bool { writeError == nil && result.first == "ok" }

        /// The daemon's own explanation of a failure, else the errno's.
        var failureMessage: String {
            if result.first == "error" && result.count >= 2 {
                let message = result.dropFirst(2).joined(separator: " ")
                return message.isEmpty ? String(result[1]) : "\(message) (\(result[1]))"
            }
            if let writeError { return String(cString: strerror(writeError)) }
            return "unexpected answer \"\(result.joined(separator: " "))\""
        }

        /// The errno the failure stands for: the write's, else the name in `error NAME …`.
        var failureErrno: Int32? {
            if let writeError { return writeError }
            guard result.first == "error", result.count >= 2 else { return nil }
            return ["ENOENT": ENOENT, "EBUSY": EBUSY, "EINVAL": EINVAL][String(result[1])]
        }

        func value(_ key: String) -> String? { status.first { $0.key == key }?.value }
    }

    let mountpoint: String

    var path: String { mountpoint + "/" + Self.fileName }

    /// True when `mountpoint` has a control file, that is, it is a snapfs mount.
    static func exists(at mountpoint: String) -> Bool {
        var st = stat()
        return stat(mountpoint + "/" + fileName, &st) == 0
    }

    /// Writes `command` (if any) and reads back the outcome and the status. Reading alone
    /// (the status) is for everyone; a command needs write access to the control file,
    /// which only the owner of the mount's root directory (root) has: otherwise `what`
    /// (`action`, for the message: "take snapshots") fails with exit code 77.
    func send(_ command: String?, action: String = "send commands") throws(CLIFailure) -> Reply {
        let fd = open(path, (command == nil ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        if fd < 0 {
            let error = errno
            if error == ENOENT || error == ENOTDIR { throw CLIFailure.notSnapfsMount(mountpoint) }
            if error == EACCES || error == EPERM { throw refusal(action) }
            throw CLIFailure("cannot open \(path): \(String(cString: strerror(error)))", code: ExitStatus.daemonFailed)
        }
        defer { close(fd) }
        var writeError: Int32?
        if let command {
            let line = Array((command + "\n").utf8)
            let n = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            if n < 0 { writeError = errno }
            if writeError == EACCES || writeError == EPERM { throw refusal(action) }
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, off_t(bytes.count)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                throw CLIFailure("cannot read \(path): \(String(cString: strerror(errno)))", code: ExitStatus.daemonFailed)
            }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        var reply = Reply(result: [], status: [], writeError: writeError)
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let (key, value) = StatusLine.split(line) else { continue }
            if key == "result" {
                reply.result = value.split(separator: " ")
            } else {
                reply.status.append((key, value))
            }
        }
        return reply
    }

    /// "only root may take snapshots of /mnt (…)", exit code 77.
    private func refusal(_ action: String) -> CLIFailure {
        var st = stat()
        let owner = stat(path, &st) == 0 ? Self.userName(st.st_uid) : "root"
        return CLIFailure("only \(owner) may \(action) of \(mountpoint) (the owner of its root directory; you are \(Self.userName(getuid())))",
                          code: ExitStatus.notPermitted)
    }

    static func userName(_ uid: uid_t) -> String {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid \(uid)" }
        return String(cString: name)
    }

    /// Sends `command` and returns the words of the result after `ok`; a refusal becomes a
    /// CLIFailure (20 for an unknown snapshot, 22 otherwise) saying `what` failed.
    func run(_ command: String, what: String, action: String) throws(CLIFailure) -> [Substring] {
        let reply = try send(command, action: action)
        if reply.succeeded { return Array(reply.result.dropFirst()) }
        let code = reply.failureErrno == ENOENT ? ExitStatus.unknownSnapshot : ExitStatus.daemonFailed
        throw CLIFailure("\(what) failed: \(reply.failureMessage)", code: code)
    }
}
