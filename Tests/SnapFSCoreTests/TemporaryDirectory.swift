import Glibc
@testable import SnapFSBacking
import SnapFSCore

/// A fresh directory under /tmp, removed (with its contents) by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/snapfs-unit-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func file(_ name: String, contents: String = "") -> String {
        let full = path + "/" + name
        let fd = open(full, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = contents.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        return full
    }

    func directory(_ name: String) -> String {
        let full = path + "/" + name
        mkdir(full, 0o755)
        return full
    }

    func remove() {
        _ = system("chattr -R -f -i '\(path)' 2>/dev/null; rm -rf '\(path)'")
    }
}

func readFile(_ path: String) -> String? {
    readWholeFile(path).map { String(decoding: $0, as: UTF8.self) }
}
