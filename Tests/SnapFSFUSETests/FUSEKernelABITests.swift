import CFUSEKernel
@testable import SnapFSFUSE
import Testing

/// The kernel structures and flags snapfs reads and writes itself, against the FUSE ABI
/// (sizes and offsets as the kernel lays them out on a 64-bit machine, protocol 7.42).
@Suite struct FUSEKernelABITests {
    func offset<T, V>(_ field: KeyPath<T, V>) -> Int? { MemoryLayout<T>.offset(of: field) }

    @Test func headers() {
        #expect(MemoryLayout<fuse_in_header>.size == 40)
        #expect(offset(\fuse_in_header.len) == 0)
        #expect(offset(\fuse_in_header.opcode) == 4)
        #expect(offset(\fuse_in_header.unique) == 8)
        #expect(offset(\fuse_in_header.nodeid) == 16)
        #expect(offset(\fuse_in_header.uid) == 24)
        #expect(offset(\fuse_in_header.gid) == 28)
        #expect(offset(\fuse_in_header.pid) == 32)
        #expect(offset(\fuse_in_header.total_extlen) == 36)

        #expect(MemoryLayout<fuse_out_header>.size == 16)
        #expect(offset(\fuse_out_header.len) == 0)
        #expect(offset(\fuse_out_header.error) == 4)
        #expect(offset(\fuse_out_header.unique) == 8)

        #expect(FUSEKernelABI.inHeaderSize == 40)
        #expect(FUSEKernelABI.outHeaderSize == 16)
    }

    @Test func initExchange() {
        #expect(MemoryLayout<fuse_init_in>.size == 64)
        #expect(offset(\fuse_init_in.major) == 0)
        #expect(offset(\fuse_init_in.minor) == 4)
        #expect(offset(\fuse_init_in.max_readahead) == 8)
        #expect(offset(\fuse_init_in.flags) == 12)
        #expect(offset(\fuse_init_in.flags2) == 16)
        #expect(FUSEKernelABI.end(of: \fuse_init_in.flags) == 16)
        #expect(FUSEKernelABI.end(of: \fuse_init_in.flags2) == 20)

        #expect(MemoryLayout<fuse_init_out>.size == 64)
        #expect(offset(\fuse_init_out.flags) == 12)
        #expect(offset(\fuse_init_out.max_background) == 16)
        #expect(offset(\fuse_init_out.congestion_threshold) == 18)
        #expect(offset(\fuse_init_out.max_write) == 20)
        #expect(offset(\fuse_init_out.time_gran) == 24)
        #expect(offset(\fuse_init_out.max_pages) == 28)
        #expect(offset(\fuse_init_out.map_alignment) == 30)
        #expect(offset(\fuse_init_out.flags2) == 32)
        #expect(SNAPFS_FUSE_MAX_STACK_DEPTH_OFFSET == 36)
        #expect(FUSEKernelABI.maxStackDepthEnd == 40)

        var reply = fuse_init_out()
        snapfs_fuse_set_max_stack_depth(&reply, 0x0102_0304)
        withUnsafeBytes(of: reply) { #expect($0.loadUnaligned(fromByteOffset: 36, as: UInt32.self) == 0x0102_0304) }
    }

    @Test func openAndCreate() {
        #expect(MemoryLayout<fuse_open_out>.size == 16)
        #expect(offset(\fuse_open_out.fh) == 0)
        #expect(offset(\fuse_open_out.open_flags) == 8)
        #expect(SNAPFS_FUSE_BACKING_ID_OFFSET == 12)
        var open = fuse_open_out()
        snapfs_fuse_set_backing_id(&open, -2)
        withUnsafeBytes(of: open) { #expect($0.loadUnaligned(fromByteOffset: 12, as: Int32.self) == -2) }

        #expect(MemoryLayout<fuse_create_in>.size == 16)
        #expect(offset(\fuse_create_in.flags) == 0)
        #expect(offset(\fuse_create_in.mode) == 4)
        #expect(offset(\fuse_create_in.umask) == 8)
        #expect(offset(\fuse_create_in.open_flags) == 12)
    }

    @Test func entries() {
        #expect(MemoryLayout<fuse_attr>.size == 88)
        let attr: [(PartialKeyPath<fuse_attr>, Int)] = [
            (\.ino, 0), (\.size, 8), (\.blocks, 16), (\.atime, 24), (\.mtime, 32), (\.ctime, 40),
            (\.atimensec, 48), (\.mtimensec, 52), (\.ctimensec, 56), (\.mode, 60), (\.nlink, 64),
            (\.uid, 68), (\.gid, 72), (\.rdev, 76), (\.blksize, 80), (\.flags, 84),
        ]
        for (field, expected) in attr { #expect(MemoryLayout<fuse_attr>.offset(of: field) == expected) }

        #expect(MemoryLayout<fuse_entry_out>.size == 128)
        #expect(offset(\fuse_entry_out.nodeid) == 0)
        #expect(offset(\fuse_entry_out.generation) == 8)
        #expect(offset(\fuse_entry_out.entry_valid) == 16)
        #expect(offset(\fuse_entry_out.attr_valid) == 24)
        #expect(offset(\fuse_entry_out.entry_valid_nsec) == 32)
        #expect(offset(\fuse_entry_out.attr_valid_nsec) == 36)
        #expect(offset(\fuse_entry_out.attr) == 40)

        // fuse_out_header, fuse_entry_out, fuse_open_out: the reply to CREATE and TMPFILE.
        #expect(MemoryLayout<snapfs_fuse_create_reply>.size == 160)
        #expect(offset(\snapfs_fuse_create_reply.header) == 0)
        #expect(offset(\snapfs_fuse_create_reply.entry) == 16)
        #expect(offset(\snapfs_fuse_create_reply.open) == 144)
    }

    @Test func ring() {
        #expect(MemoryLayout<fuse_uring_ent_in_out>.size == 32)
        #expect(offset(\fuse_uring_ent_in_out.commit_id) == 8)
        #expect(offset(\fuse_uring_ent_in_out.payload_sz) == 16)
        #expect(MemoryLayout<fuse_uring_req_header>.size == 288)
        #expect(offset(\fuse_uring_req_header.in_out) == 0)
        #expect(offset(\fuse_uring_req_header.op_in) == 128)
        #expect(offset(\fuse_uring_req_header.ring_ent_in_out) == 256)
        #expect(MemoryLayout<fuse_uring_cmd_req>.size == 24)
        #expect(offset(\fuse_uring_cmd_req.commit_id) == 8)
        #expect(offset(\fuse_uring_cmd_req.qid) == 16)
        #expect(FUSE_IO_URING_CMD_REGISTER.rawValue == 1)
        #expect(FUSE_IO_URING_CMD_COMMIT_AND_FETCH.rawValue == 2)

        #expect(MemoryLayout<fuse_backing_map>.size == 16)
        #expect(offset(\fuse_backing_map.fd) == 0)
        #expect(offset(\fuse_backing_map.flags) == 4)
    }

    @Test func opcodesAndFlags() {
        #expect(FUSEKernelABI.initOpcode == 26)
        #expect(FUSEKernelABI.tmpfileOpcode == 51)
        #expect(FUSE_NOTIFY_REPLY.rawValue == 41)

        #expect(FUSEKernelABI.maxPages == 1 << 22)
        #expect(FUSEKernelABI.handleKillprivV2 == 1 << 28)
        #expect(FUSEKernelABI.initExtended == 1 << 30)
        // Bits 36, 37 and 41 of the flags, in the second word.
        #expect(FUSE_DIRECT_IO_ALLOW_MMAP == 1 << 36)
        #expect(FUSE_PASSTHROUGH == 1 << 37)
        #expect(FUSE_OVER_IO_URING == 1 << 41)
        #expect(FUSEKernelABI.directIOAllowMmap == 1 << 4)
        #expect(FUSEKernelABI.passthrough == 1 << 5)
        #expect(FUSEKernelABI.overIOURing == 1 << 9)

        #expect(FOPEN_KEEP_CACHE == 1 << 1)
        #expect(FOPEN_NOFLUSH == 1 << 5)
        #expect(FUSEKernelABI.fopenPassthrough == 1 << 7)
        #expect(FUSEKernelABI.minReadBuffer == 8192)
    }
}
