#ifndef SNAPFS_CFUSE_SHIM_H
#define SNAPFS_CFUSE_SHIM_H

#define FUSE_USE_VERSION 314
#include <stddef.h>
#include <fuse_lowlevel.h>
#include <fuse_opt.h>

/* Swift cannot import C macros or variadic functions; these wrap the few that snapfs needs. */

static inline int snapfs_session_loop_mt(struct fuse_session *se, unsigned int max_idle_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -1;
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_idle_threads(config, max_idle_threads);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

/* A one-buffer vector that reads `size` bytes from `fd` at `offset` (spliced when the kernel allows). */
static inline struct fuse_bufvec snapfs_bufvec_fd(int fd, size_t size, off_t offset) {
    struct fuse_bufvec vec = FUSE_BUFVEC_INIT(size);
    vec.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    vec.buf[0].fd = fd;
    vec.buf[0].pos = offset;
    return vec;
}

static inline struct fuse_args snapfs_args_init(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    return args;
}

#endif
