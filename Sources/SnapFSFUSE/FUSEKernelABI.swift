import CFUSEKernel

/// The FUSE kernel protocol where snapfs reads or writes it itself rather than through
/// libfuse: the INIT exchange and the open replies it completes (``FUSEChannel``), the
/// FUSE_TMPFILE requests it answers (``FUSETmpfile``), the requests it counts. Structures and
/// flags are the kernel's (`<linux/fuse.h>`, with `CFUSEKernel.h` for what is newer than
/// that header's protocol minor); this names the values snapfs uses, in the types it uses
/// them in. SnapFSFUSETests checks the layouts against the kernel ABI.
enum FUSEKernelABI {
    static let inHeaderSize = MemoryLayout<fuse_in_header>.size
    static let outHeaderSize = MemoryLayout<fuse_out_header>.size

    static let initOpcode = FUSE_INIT.rawValue
    static let tmpfileOpcode = FUSE_TMPFILE.rawValue

    // INIT flags of the first word (`flags`).
    static let handleKillprivV2 = UInt32(FUSE_HANDLE_KILLPRIV_V2)
    static let initExtended = UInt32(FUSE_INIT_EXT)
    static let maxPages = UInt32(FUSE_MAX_PAGES)

    // INIT flags of the second word (`flags2`: bits 32–63 of the flags, shifted down).
    static let directIOAllowMmap = secondWord(FUSE_DIRECT_IO_ALLOW_MMAP)
    static let passthrough = secondWord(FUSE_PASSTHROUGH)
    static let overIOURing = secondWord(FUSE_OVER_IO_URING)

    /// In `fuse_open_out.open_flags`: the kernel reads and writes the backing file itself.
    static let fopenPassthrough = UInt32(FOPEN_PASSTHROUGH)

    /// The byte just past `fuse_init_out.max_stack_depth` (7.40; see `CFUSEKernel.h`).
    static let maxStackDepthEnd = Int(SNAPFS_FUSE_MAX_STACK_DEPTH_OFFSET) + MemoryLayout<UInt32>.size

    /// The smallest read buffer the kernel accepts, and so the smallest ring payload.
    static let minReadBuffer = Int(FUSE_MIN_READ_BUFFER)
    /// The pages a request may carry when the INIT reply does not set `max_pages`
    /// (the kernel's FUSE_DEFAULT_MAX_PAGES_PER_REQ, which its uapi header leaves out).
    static let defaultMaxPages = 32

    private static func secondWord(_ flag: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: flag >> 32)
    }

    /// The request's header; `request` holds at least ``inHeaderSize`` bytes.
    @inline(__always)
    static func header(of request: UnsafeRawPointer) -> fuse_in_header {
        request.loadUnaligned(as: fuse_in_header.self)
    }

    /// The byte just past `field` in its structure: a structure of which the kernel (or
    /// libfuse) sent only the first `n` bytes has the field when `n` reaches this. Older
    /// protocol minors send shorter `fuse_init_in` and `fuse_init_out`.
    static func end<Structure, Field>(of field: KeyPath<Structure, Field>) -> Int {
        MemoryLayout<Structure>.offset(of: field)! + MemoryLayout<Field>.size
    }

    /// A structure from the first bytes of `bytes`, as many as both have (the rest zero).
    /// Returns how many were there.
    static func load<Structure: BitwiseCopyable>(_ value: inout Structure, from bytes: UnsafeRawBufferPointer) -> Int {
        withUnsafeMutableBytes(of: &value) { target in
            let count = min(target.count, bytes.count)
            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<count]))
            return count
        }
    }

    /// The first `count` bytes of `value` written over the start of `bytes`.
    static func store<Structure: BitwiseCopyable>(_ value: Structure, count: Int, into bytes: UnsafeMutableRawPointer) {
        withUnsafeBytes(of: value) { source in
            bytes.copyMemory(from: source.baseAddress!, byteCount: min(count, source.count))
        }
    }
}
