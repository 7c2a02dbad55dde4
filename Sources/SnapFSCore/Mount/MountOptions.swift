/// The `-o` options of `snapfs mount`, split into snapfs's own and those for libfuse.
public struct MountOptions: Sendable, Equatable {
    public var allowNonEmpty = false
    public var writebackCache = false
    public var readOnly = false
    public var debug = false
    public var noAllowOther = false
    public var posixACL = true
    /// Options passed on to libfuse and the kernel, in the order given.
    public var passed: [String] = []

    /// Options mount(8) hands every helper that mean nothing to a FUSE mount.
    public static let ignored: Set<String> = ["defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "rw"]

    public init(_ options: [String]) {
        for option in options where !option.isEmpty {
            switch option {
            case "nonempty": allowNonEmpty = true
            case "writeback_cache": writebackCache = true
            case "no_writeback_cache": writebackCache = false
            case "debug": debug = true
            case "noallow_other": noAllowOther = true
            case "acl": posixACL = true
            case "noacl": posixACL = false
            case "ro":
                readOnly = true
                passed.append(option)
            case _ where Self.ignored.contains(option) || option.hasPrefix("x-") || option.hasPrefix("comment="):
                continue
            default:
                passed.append(option)
            }
        }
    }

    /// What libfuse gets: the user's options plus snapfs's defaults.
    public func fuseOptions(backing: String, asRoot: Bool) -> [String] {
        var result = ["fsname=\(backing.escapingCommas)", "subtype=snapfs", "default_permissions"]
        if asRoot && !noAllowOther && !passed.contains("allow_other") { result.append("allow_other") }
        result += passed.filter { $0 != "default_permissions" }
        return result
    }
}

extension String {
    /// libfuse splits -o at commas; a comma inside a value is written `\,`.
    var escapingCommas: String {
        split(separator: ",", omittingEmptySubsequences: false).joined(separator: "\\,")
    }
}
