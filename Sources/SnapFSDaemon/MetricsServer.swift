import CLinux
import Glibc
import SnapFSBacking

/// Where `--metrics` serves: an IPv4 or IPv6 address and a port. Without an address (`9419`,
/// `:9419`) it is 127.0.0.1: only this machine can scrape unless another address is given.
public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: UInt16
    public let ipv6: Bool

    /// `PORT`, `:PORT`, `localhost:PORT`, `IPV4:PORT` or `[IPV6]:PORT`; PORT 1–65535. No names
    /// are looked up: an address is given as numbers.
    public init?(parsing text: String) {
        var host = "127.0.0.1"
        var portText = Substring(text)
        var ipv6 = false
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
            ipv6 = true
        } else if let colon = text.lastIndex(of: ":") {
            let given = String(text[..<colon])
            if given.contains(":") { return nil }   // an IPv6 address goes in brackets
            if !given.isEmpty { host = given == "localhost" ? "127.0.0.1" : given }
            portText = text[text.index(after: colon)...]
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = UInt16(portText), port > 0 else { return nil }
        self.host = host
        self.port = port
        self.ipv6 = ipv6
        guard (try? socketAddress()) != nil else { return nil }
    }

    public var description: String { ipv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Only this machine can connect (127.0.0.0/8, ::1).
    public var isLoopback: Bool {
        guard let address = try? socketAddress() else { return false }
        switch address {
        case .v4(let sin): return UInt32(bigEndian: sin.sin_addr.s_addr) >> 24 == 127
        case .v6(let sin6):
            return withUnsafeBytes(of: sin6.sin6_addr) { bytes in bytes.dropLast().allSatisfy { $0 == 0 } && bytes.last == 1 }
        }
    }

    enum SocketAddress {
        case v4(sockaddr_in)
        case v6(sockaddr_in6)
    }

    struct NotAnAddress: Error {}

    func socketAddress() throws(NotAnAddress) -> SocketAddress {
        if ipv6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else { throw NotAnAddress() }
            return .v6(sin6)
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &sin.sin_addr) == 1 else { throw NotAnAddress() }
        return .v4(sin)
    }
}

/// The `--metrics` endpoint: plain HTTP/1.1, `GET /metrics` answered with ``MetricsText``
/// of the status lines, then the connection closed.
///
/// Bounded, so that no client can hold up the daemon or another client: one thread serves
/// every connection with non-blocking sockets and `poll`; at most ``maxConnections`` are
/// open (a new one closes the oldest); a request may be ``maxRequestBytes`` long; a
/// connection has ``deadlineMs`` from its accept to send its request and take the answer,
/// then it is closed. The thread reads the status as `snapfs status` does (atomics, the
/// catalog): it never waits for the freeze gate or takes a request thread's lock.
public final class MetricsServer: Sendable {
    static let maxConnections = 8
    static let maxRequestBytes = 8192
    static let deadlineMs: Int64 = 5000

    public let address: MetricsAddress
    private let listener: Int32

    /// Listens on `address` (binding here, so that a busy port fails the mount before it is
    /// made); throws the failed call's message.
    public init(address: MetricsAddress) throws(CommandFailure) {
        self.address = address
        let sock = socket(address.ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { throw Self.failure("socket", address) }
        var one: Int32 = 1
        _ = setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if address.ipv6 { _ = setsockopt(sock, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let bound: Int32
        switch try? address.socketAddress() {
        case .v4(var sin)?:
            bound = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        case .v6(var sin6)?:
            bound = withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        case nil:
            errno = EINVAL
            bound = -1
        }
        guard bound == 0 else {
            let failure = Self.failure("bind", address)
            close(sock)
            throw failure
        }
        guard listen(sock, Int32(Self.maxConnections)) == 0 else {
            let failure = Self.failure("listen", address)
            close(sock)
            throw failure
        }
        listener = sock
    }

    private static func failure(_ call: String, _ address: MetricsAddress) -> CommandFailure {
        CommandFailure("cannot serve metrics on \(address) (--metrics): \(call): \(String(cString: strerror(errno)))",
                       code: ExitStatus.mountFailed)
    }

    /// Serves on a thread of its own; `metrics` gives the text of one answer.
    public func start(_ metrics: @escaping @Sendable () -> String) {
        BackgroundThread.start { self.run(metrics) }
    }

    private struct Connection {
        let fd: Int32
        let deadline: Int64
        var request: [UInt8] = []
        var response: [UInt8]?
        var sent = 0
    }

    private func run(_ metrics: @Sendable () -> String) {
        var connections: [Connection] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            fds += connections.map { pollfd(fd: $0.fd, events: Int16($0.response == nil ? POLLIN : POLLOUT), revents: 0) }
            let now = Self.nowMs()
            let soonest = connections.map(\.deadline).min().map { max(0, $0 - now) } ?? 60_000
            let ready = poll(&fds, nfds_t(fds.count), Int32(min(soonest, 60_000)))
            if ready < 0 && errno != EINTR { BackgroundThread.sleep(milliseconds: 100) }
            var keep: [Connection] = []
            for (index, var connection) in connections.enumerated() {
                let events = ready > 0 ? fds[index + 1].revents : 0
                if events != 0 && !serve(&connection, events: events, buffer: &buffer, metrics: metrics) {
                    close(connection.fd)
                } else if Self.nowMs() >= connection.deadline {
                    close(connection.fd)
                } else {
                    keep.append(connection)
                }
            }
            connections = keep
            guard ready > 0, fds[0].revents & Int16(POLLIN) != 0 else { continue }
            while true {
                let fd = snapfs_accept_nonblocking(listener)
                if fd < 0 { break }
                if connections.count >= Self.maxConnections { close(connections.removeFirst().fd) }
                connections.append(Connection(fd: fd, deadline: Self.nowMs() + Self.deadlineMs))
            }
        }
    }

    /// Reads what came, answers once the request's head is in, writes what the socket
    /// takes; false when the connection is done with (answered, closed, or failed).
    private func serve(_ connection: inout Connection, events: Int16, buffer: inout [UInt8],
                       metrics: @Sendable () -> String) -> Bool {
        if connection.response == nil {
            let room = Self.maxRequestBytes - connection.request.count
            let n = buffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress!, min(room, $0.count), 0) }
            if n < 0 { return errno == EAGAIN || errno == EINTR }
            if n == 0 { return false }
            connection.request += buffer[0..<n]
            if let head = Self.head(connection.request) {
                connection.response = Self.answer(head, metrics)
            } else if connection.request.count >= Self.maxRequestBytes {
                connection.response = Self.response(431, "Request Header Fields Too Large", "request too long\n")
            } else {
                return true
            }
        }
        guard let response = connection.response else { return true }
        let n = response.withUnsafeBytes { send(connection.fd, $0.baseAddress! + connection.sent, $0.count - connection.sent, Int32(MSG_NOSIGNAL)) }
        if n < 0 { return errno == EAGAIN || errno == EINTR }
        connection.sent += n
        if connection.sent < response.count { return true }
        shutdown(connection.fd, Int32(SHUT_WR))
        return false
    }

    /// The request line, once the whole head (up to the empty line) has come.
    static func head(_ request: [UInt8]) -> Substring? {
        // The empty line: `\n\n` or `\n\r\n`.
        let newline = UInt8(ascii: "\n")
        guard request.indices.contains(where: { index in
            request[index] == newline && index > 0
                && (request[index - 1] == newline || (index > 1 && request[index - 1] == UInt8(ascii: "\r") && request[index - 2] == newline))
        }) else { return nil }
        let line = String(decoding: request.prefix { $0 != newline }, as: UTF8.self)
        return Substring(line.hasSuffix("\r") ? String(line.dropLast()) : line)
    }

    /// The answer to one request line: 200 with the metrics for `GET /metrics`, else 400,
    /// 404 or 405.
    static func answer(_ line: Substring, _ metrics: () -> String) -> [UInt8] {
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return response(400, "Bad Request", "bad request\n") }
        guard parts[0] == "GET" else { return response(405, "Method Not Allowed", "only GET\n", extra: "Allow: GET\r\n") }
        guard parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") else { return response(404, "Not Found", "not found: try /metrics\n") }
        return response(200, "OK", metrics(), type: "text/plain; version=0.0.4; charset=utf-8")
    }

    static func response(_ code: Int, _ reason: String, _ body: String, type: String = "text/plain; charset=utf-8",
                         extra: String = "") -> [UInt8] {
        let body = Array(body.utf8)
        let head = "HTTP/1.1 \(code) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    static func nowMs() -> Int64 { MonotonicClock.microseconds() / 1000 }
}
