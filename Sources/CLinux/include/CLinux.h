#ifndef SNAPFS_CLINUX_H
#define SNAPFS_CLINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>

/* GNU-only constants the Glibc overlay leaves out (it is imported without _GNU_SOURCE). */
static const int SNAPFS_O_PATH = 010000000;
static const int SNAPFS_AT_EMPTY_PATH = 0x1000;
static const int SNAPFS_O_DIRECT = 040000;
static const int SNAPFS_O_TMPFILE = 020200000; /* __O_TMPFILE | O_DIRECTORY */
static const long SNAPFS_UTIME_NOW = (1L << 30) - 1L;
static const long SNAPFS_UTIME_OMIT = (1L << 30) - 2L;

/* Thin wrappers over Linux calls that Swift's Glibc overlay does not expose
   (variadic functions, _GNU_SOURCE-only declarations, raw syscalls). Each returns
   what the call returns and leaves errno as the call set it. */

int snapfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
int snapfs_fallocate(int fd, int mode, off_t offset, off_t length);
ssize_t snapfs_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags);
int snapfs_openat(int dirfd, const char *path, int flags, mode_t mode);
int snapfs_fcntl_int(int fd, int cmd, int arg);
int snapfs_ioctl_int(int fd, unsigned long request, long arg);
int snapfs_syncfs(int fd);
ssize_t snapfs_splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags);
int snapfs_dev_major(uint64_t dev);
/* name_to_handle_at(fd, "", …, AT_EMPTY_PATH) into `buffer` (a struct file_handle);
   returns the number of bytes used, or -1. */
int snapfs_handle_of(int fd, unsigned char *buffer, size_t size);
/* open_by_handle_at(mount_fd, buffer, flags) for a handle from snapfs_handle_of. */
int snapfs_open_by_handle(int mount_fd, unsigned char *buffer, int flags);
int snapfs_dev_minor(uint64_t dev);

enum {
    SNAPFS_RENAME_NOREPLACE = 1,
    SNAPFS_RENAME_EXCHANGE = 2,
    SNAPFS_RENAME_WHITEOUT = 4,
};

#endif
