#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
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

int snapfs_handle_of(int fd, unsigned char *buffer, size_t size) {
    struct file_handle *handle = (struct file_handle *)buffer;
    int mount_id;
    if (size < sizeof(*handle)) { errno = EINVAL; return -1; }
    handle->handle_bytes = (unsigned int)(size - sizeof(*handle));
    if (name_to_handle_at(fd, "", handle, &mount_id, AT_EMPTY_PATH) != 0) return -1;
    return (int)(sizeof(*handle) + handle->handle_bytes);
}

int snapfs_open_by_handle(int mount_fd, unsigned char *buffer, int flags) {
    return open_by_handle_at(mount_fd, (struct file_handle *)buffer, flags);
}
