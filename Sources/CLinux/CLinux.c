#define _GNU_SOURCE
#include "CLinux.h"
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int snapfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

int snapfs_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

ssize_t snapfs_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags) {
    return copy_file_range(fd_in, off_in, fd_out, off_out, length, flags);
}

int snapfs_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}

int snapfs_fcntl_int(int fd, int cmd, int arg) {
    return fcntl(fd, cmd, arg);
}

int snapfs_ioctl_int(int fd, unsigned long request, long arg) {
    return ioctl(fd, request, arg);
}

int snapfs_syncfs(int fd) {
    return syncfs(fd);
}

ssize_t snapfs_splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags) {
    return splice(fd_in, off_in, fd_out, off_out, length, flags);
}

int snapfs_dev_major(uint64_t dev) { return (int)major(dev); }
int snapfs_dev_minor(uint64_t dev) { return (int)minor(dev); }
