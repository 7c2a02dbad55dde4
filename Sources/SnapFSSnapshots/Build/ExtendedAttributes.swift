import CLinux
import Glibc
import SnapFSBacking
import SystemPackage

/// Copies every extended attribute the source lists (user., trusted., security., and the
/// POSIX ACLs in system.) to a target, through descriptors or, for symlinks and special
/// files that cannot be opened for I/O, through `/proc/self/fd/DIR/NAME` paths with the
/// `l*` calls (which do not follow the last component).
struct ExtendedAttributes {
    /// Where an attribute set lives.
    enum Place {
        case descriptor(Int32)
        case path(UnsafePointer<CChar>)
    }

    /// XATTR_LIST_MAX and XATTR_SIZE_MAX: the largest list and value Linux allows.
    static let bufferSize = 65536

    let names = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 8)
    let value = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 8)

    func deallocate() {
        names.deallocate()
        value.deallocate()
    }

    /// Copies the attributes of `source` to `target`; returns whether there were any.
    /// A namespace the target filesystem does not support (EOPNOTSUPP) is skipped.
    func copy(from source: Place, to target: Place) throws(Errno) -> Bool {
        let length = try list(source)
        if length == 0 { return false }
        try forEachName(length) { (name) throws(Errno) in
            let size = Self.get(source, name, value)
            if size < 0 {
                if errno == ENODATA { return }  // removed since it was listed
                throw .current
            }
            try Self.set(target, name, UnsafeRawBufferPointer(rebasing: value[0..<size]))
        }
        return true
    }

    /// The attributes of `source`, as (name, value) pairs, for setting them later.
    func read(_ source: Place) throws(Errno) -> [(name: [CChar], value: [UInt8])] {
        let length = try list(source)
        if length == 0 { return [] }
        var result: [(name: [CChar], value: [UInt8])] = []
        try forEachName(length) { (name) throws(Errno) in
            let size = Self.get(source, name, value)
            if size < 0 {
                if errno == ENODATA { return }
                throw .current
            }
            let nameBytes = Array(UnsafeBufferPointer(start: name, count: strlen(name) + 1))
            result.append((nameBytes, Array(UnsafeRawBufferPointer(rebasing: value[0..<size]))))
        }
        return result
    }

    /// Sets attributes kept by `read`.
    static func write(_ attributes: [(name: [CChar], value: [UInt8])], to target: Place) throws(Errno) {
        for (name, value) in attributes {
            let failure: Errno? = name.withUnsafeBufferPointer { name in
                value.withUnsafeBufferPointer { value in
                    do throws(Errno) {
                        try set(target, name.baseAddress!, UnsafeRawBufferPointer(value))
                        return nil
                    } catch {
                        return error
                    }
                }
            }
            if let failure { throw failure }
        }
    }

    /// Removes the POSIX ACLs a new directory inherited from its parent's default ACL.
    static func removeInheritedACLs(_ fd: Int32) throws(Errno) {
        for name in ["system.posix_acl_access", "system.posix_acl_default"] {
            if fremovexattr(fd, name) != 0 && errno != ENODATA && errno != EOPNOTSUPP { throw .current }
        }
    }

    private func list(_ place: Place) throws(Errno) -> Int {
        let buffer = names.baseAddress!.assumingMemoryBound(to: CChar.self)
        let length = switch place {
        case .descriptor(let fd): flistxattr(fd, buffer, names.count)
        case .path(let path): llistxattr(path, buffer, names.count)
        }
        if length < 0 {
            if errno == EOPNOTSUPP { return 0 }  // the filesystem has no xattrs at all
            throw .current
        }
        return length
    }

    private func forEachName(_ length: Int, _ body: (UnsafePointer<CChar>) throws(Errno) -> Void) throws(Errno) {
        let base = UnsafePointer(names.baseAddress!.assumingMemoryBound(to: CChar.self))
        var offset = 0
        while offset < length {
            let name = base + offset
            offset += strlen(name) + 1
            try body(name)
        }
    }

    private static func get(_ place: Place, _ name: UnsafePointer<CChar>, _ value: UnsafeMutableRawBufferPointer) -> Int {
        switch place {
        case .descriptor(let fd): fgetxattr(fd, name, value.baseAddress, value.count)
        case .path(let path): lgetxattr(path, name, value.baseAddress, value.count)
        }
    }

    private static func set(_ place: Place, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer) throws(Errno) {
        let result = switch place {
        case .descriptor(let fd): fsetxattr(fd, name, value.baseAddress, value.count, 0)
        case .path(let path): lsetxattr(path, name, value.baseAddress, value.count, 0)
        }
        if result != 0 && errno != EOPNOTSUPP { throw .current }
    }
}
