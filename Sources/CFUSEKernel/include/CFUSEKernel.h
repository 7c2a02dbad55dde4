#ifndef SNAPFS_CFUSEKERNEL_H
#define SNAPFS_CFUSEKERNEL_H

/* The FUSE kernel protocol as snapfs speaks it itself, beside libfuse: the structures and
   flags of <linux/fuse.h>, completed here with what is newer than the protocol minor of
   the header the build machine has (the kernel never changes what a minor defined), and
   the C parts of the kernel side that only SnapFSFUSE uses: io_uring queues and backing
   files for passthrough. */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <linux/ioctl.h>
#include <linux/fuse.h>

#if FUSE_KERNEL_MINOR_VERSION < 37
#error "snapfs needs <linux/fuse.h> of FUSE protocol 7.37 or newer (FUSE_TMPFILE, flags2)"
#endif

/* 7.39 */
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif

/* 7.40: passthrough. fuse_open_out's last word becomes backing_id and fuse_init_out's first
   unused word max_stack_depth (see the accessors below). */
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH (1ULL << 37)
#endif
#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH (1 << 7)
#endif
#if FUSE_KERNEL_MINOR_VERSION < 40
struct fuse_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif

/* 7.42: FUSE over io_uring. */
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif
#if FUSE_KERNEL_MINOR_VERSION < 42
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

/* The entry's part of fuse_uring_req_header. */
struct fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;         /* to name in the COMMIT_AND_FETCH that answers the request */
    uint32_t payload_sz;        /* of the payload buffer: the request's, then the reply's */
    uint32_t padding;
    uint64_t reserved;
};

/* The header buffer of a ring entry. */
struct fuse_uring_req_header {
    char in_out[FUSE_URING_IN_OUT_HEADER_SZ];   /* fuse_in_header, then fuse_out_header */
    char op_in[FUSE_URING_OP_IN_OUT_SZ];        /* the opcode's own header */
    struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
    FUSE_IO_URING_CMD_INVALID = 0,
    FUSE_IO_URING_CMD_REGISTER = 1,
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

/* In the command area of a 128-byte SQE. */
struct fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};
#endif

/* fuse_open_out.backing_id and fuse_init_out.max_stack_depth (7.40), whatever the
   header calls these words. */
static inline void snapfs_fuse_set_backing_id(struct fuse_open_out *out, int32_t id) {
#if FUSE_KERNEL_MINOR_VERSION >= 40
    out->backing_id = id;
#else
    out->padding = (uint32_t)id;
#endif
}

static inline void snapfs_fuse_set_max_stack_depth(struct fuse_init_out *out, uint32_t depth) {
#if FUSE_KERNEL_MINOR_VERSION >= 40
    out->max_stack_depth = depth;
#else
    out->unused[0] = depth;
#endif
}

#if FUSE_KERNEL_MINOR_VERSION >= 40
static const size_t SNAPFS_FUSE_BACKING_ID_OFFSET = offsetof(struct fuse_open_out, backing_id);
static const size_t SNAPFS_FUSE_MAX_STACK_DEPTH_OFFSET = offsetof(struct fuse_init_out, max_stack_depth);
#else
static const size_t SNAPFS_FUSE_BACKING_ID_OFFSET = offsetof(struct fuse_open_out, padding);
static const size_t SNAPFS_FUSE_MAX_STACK_DEPTH_OFFSET = offsetof(struct fuse_init_out, unused);
#endif

/* The reply to FUSE_CREATE, which FUSE_TMPFILE shares: the new entry and the open file. */
struct snapfs_fuse_create_reply {
    struct fuse_out_header header;
    struct fuse_entry_out entry;
    struct fuse_open_out open;
};

/* Passthrough (Linux >= 6.9). FUSE_DEV_IOC_BACKING_OPEN on the /dev/fuse descriptor: the
   id (> 0) registered for `fd`, or -1 with errno. */
int snapfs_fuse_backing_open(int devfd, int fd);
/* FUSE_DEV_IOC_BACKING_CLOSE. */
int snapfs_fuse_backing_close(int devfd, int32_t id);

/* FUSE over io_uring (FUSERing.c). `process(context, request, length)` is called on a ring
   thread with a request laid out as read(2) from /dev/fuse returns it; its reply must be
   sent from that thread before it returns, through the session's writev (which hands it to
   snapfs_uring_capture) or splice (snapfs_uring_capture_pipe). */
typedef void (*snapfs_uring_process)(void *context, void *request, size_t length);
struct snapfs_uring;
/* Sets up `per_queue` rings for each CPU's queue and starts their threads, which wait for
   snapfs_uring_start. NULL with errno if io_uring cannot be set up. */
struct snapfs_uring *snapfs_uring_create(int devfd, int per_queue, snapfs_uring_process process, void *context);
/* After the INIT reply: every thread registers its entry (payload buffers of
   `payload_size` bytes). 0, or the first registration's -errno. */
int snapfs_uring_start(struct snapfs_uring *ring, size_t payload_size);
/* Before INIT was answered: the threads end without registering. */
void snapfs_uring_cancel(struct snapfs_uring *ring);
int snapfs_uring_queues(const struct snapfs_uring *ring);
long snapfs_uring_served(struct snapfs_uring *ring);
/* A reply being written: when the calling thread serves the ring request it answers, the
   reply goes into the ring entry and its length is returned; otherwise -1. */
ssize_t snapfs_uring_capture(const struct iovec *iov, int count);
/* The same for a reply spliced from `pipe_fd` (`length` bytes, header first). */
ssize_t snapfs_uring_capture_pipe(int pipe_fd, size_t length);
/* Whether the calling thread is serving a ring request. */
int snapfs_uring_serving(void);

#endif
