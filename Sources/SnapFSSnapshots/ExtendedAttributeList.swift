import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// The extended attributes of a directory entry, named by a directory descriptor and a name,
/// without following a final symlink.
///
/// The calls go through `/proc/self/fd/DIR/NAME` with the `l…xattr` variants, so that they
/// work on every type of entry (a FIFO cannot be opened without blocking, a symlink cannot
/// be opened at all) and on names that are not UTF-8.
public enum ExtendedAttributeList {
    /// All attributes as (name, value), sorted by name. A filesystem without xattr support
    /// gives an empty list.
    public static func all(in dirFD: Int32, _ name: [UInt8]) throws(Errno) -> [(name: [UInt8], value: [UInt8])] {
        try procPath(dirFD, name).withCString { (path) throws(Errno) -> [(name: [UInt8], value: [UInt8])] in
            let list = try sizedRead { buffer, size in CLinux.llistxattr(path, buffer, size) }
            let names = list.split(separator: 0, omittingEmptySubsequences: true).map(Array.init)
            var result: [(name: [UInt8], value: [UInt8])] = []
            for attribute in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                do throws(Errno) {
                    let value = try attribute.withCString { (cName) throws(Errno) -> [UInt8] in
                        try sizedRead { buffer, size in CLinux.lgetxattr(path, cName, buffer, size) }
                    }
                    result.append((attribute, value))
                } catch .noData {
                    continue  // removed between the list and the read
                } catch {
                    throw error
                }
            }
            return result
        }
    }

    /// Sets `attribute` to `value`.
    public static func set(in dirFD: Int32, _ name: [UInt8], attribute: [UInt8], value: [UInt8]) throws(Errno) {
        let result = procPath(dirFD, name).withCString { path in
            attribute.withCString { cName in
                value.withUnsafeBytes { CLinux.lsetxattr(path, cName, $0.baseAddress, $0.count, 0) }
            }
        }
        if result != 0 { throw Errno.current }
    }

    /// Removes `attribute`; one that is already gone is not an error.
    public static func remove(in dirFD: Int32, _ name: [UInt8], attribute: [UInt8]) throws(Errno) {
        let result = procPath(dirFD, name).withCString { path in
            attribute.withCString { CLinux.lremovexattr(path, $0) }
        }
        if result != 0 && errno != ENODATA { throw Errno.current }
    }

    /// `/proc/self/fd/DIR/NAME`, or `/proc/self/fd/DIR` for an empty name.
    static func procPath(_ dirFD: Int32, _ name: [UInt8]) -> [UInt8] {
        Array("/proc/self/fd/\(dirFD)".utf8) + (name.isEmpty ? [] : [UInt8(ascii: "/")] + name)
    }

    /// Runs a size-query-then-read call until the buffer is big enough; a filesystem
    /// without xattr support gives an empty result.
    fileprivate static func sizedRead(_ call: (UnsafeMutablePointer<CChar>?, Int) -> Int) throws(Errno) -> [UInt8] {
        while true {
            let size = call(nil, 0)
            if size < 0 {
                if errno == ENOTSUP { return [] }
                throw Errno.current
            }
            if size == 0 { return [] }
            var buffer = [UInt8](repeating: 0, count: size)
            let got = buffer.withUnsafeMutableBytes { call($0.baseAddress!.assumingMemoryBound(to: CChar.self), size) }
            if got >= 0 { return Array(buffer[0..<got]) }
            if errno == ERANGE { continue }  // grew in between
            if errno == ENOTSUP { return [] }
            throw Errno.current
        }
    }
}

extension ExtendedAttributeList {
    /// All attributes of the object open at `fd` (any type but a symlink; an `O_PATH`
    /// descriptor will do), sorted by name. Through `/proc/self/fd/N`, which leads to the
    /// object itself, never to a name.
    public static func all(ofObject fd: Int32) throws(Errno) -> [(name: [UInt8], value: [UInt8])] {
        try Array("/proc/self/fd/\(fd)".utf8).withCString { (path) throws(Errno) -> [(name: [UInt8], value: [UInt8])] in
            let list = try sizedRead { buffer, size in CLinux.listxattr(path, buffer, size) }
            var result: [(name: [UInt8], value: [UInt8])] = []
            for attribute in list.split(separator: 0).map(Array.init).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                do throws(Errno) {
                    let value = try attribute.withCString { (cName) throws(Errno) -> [UInt8] in
                        try sizedRead { buffer, size in CLinux.getxattr(path, cName, buffer, size) }
                    }
                    result.append((attribute, value))
                } catch .noData {
                    continue
                } catch {
                    throw error
                }
            }
            return result
        }
    }

    /// Makes the attributes of the object open at `fd` equal to `wanted`; attributes the
    /// filesystem does not support are skipped.
    public static func replace(ofObject fd: Int32, with wanted: [(name: [UInt8], value: [UInt8])]) throws(Errno) {
        let present = try all(ofObject: fd)
        if wanted.elementsEqual(present, by: { $0.name == $1.name && $0.value == $1.value }) { return }
        let path = "/proc/self/fd/\(fd)"
        let wantedNames = Set(wanted.map(\.name))
        for attribute in present where !wantedNames.contains(attribute.name) {
            let result = path.withCString { p in attribute.name.withCString { CLinux.removexattr(p, $0) } }
            if result != 0 && errno != ENODATA && errno != ENOTSUP { throw .current }
        }
        for attribute in wanted {
            let result = path.withCString { p in
                attribute.name.withCString { n in attribute.value.withUnsafeBytes { CLinux.setxattr(p, n, $0.baseAddress, $0.count, 0) } }
            }
            if result != 0 && errno != ENOTSUP { throw .current }
        }
    }
}
