#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <string.h>
#include <sys/vfs.h>
#include <linux/fs.h>
#if __has_include(<linux/btrfs.h>)
#include <linux/btrfs.h>
#else
/* The stable btrfs ioctl ABI, for systems without the kernel header. */
#define BTRFS_IOCTL_MAGIC 0x94
#define BTRFS_PATH_NAME_MAX 4087
#define BTRFS_SUBVOL_NAME_MAX 4039
#define BTRFS_SUBVOL_RDONLY (1ULL << 1)
struct btrfs_ioctl_vol_args { int64_t fd; char name[BTRFS_PATH_NAME_MAX + 1]; };
struct btrfs_ioctl_vol_args_v2 {
    int64_t fd; uint64_t transid; uint64_t flags; uint64_t unused[4];
    char name[BTRFS_SUBVOL_NAME_MAX + 1];
};
#define BTRFS_IOC_SUBVOL_CREATE _IOW(BTRFS_IOCTL_MAGIC, 14, struct btrfs_ioctl_vol_args)
#define BTRFS_IOC_SNAP_DESTROY _IOW(BTRFS_IOCTL_MAGIC, 15, struct btrfs_ioctl_vol_args)
#define BTRFS_IOC_SNAP_CREATE_V2 _IOW(BTRFS_IOCTL_MAGIC, 23, struct btrfs_ioctl_vol_args_v2)
#define BTRFS_IOC_SUBVOL_GETFLAGS _IOR(BTRFS_IOCTL_MAGIC, 25, uint64_t)
#define BTRFS_IOC_SUBVOL_SETFLAGS _IOW(BTRFS_IOCTL_MAGIC, 26, uint64_t)
#endif
#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif

int snapfs_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

int snapfs_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

ssize_t snapfs_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags) {
    return copy_file_range(fd_in, off_in, fd_out, off_out, length, flags);
}

int snapfs_accept_nonblocking(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int snapfs_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return openat(dirfd, path, flags, mode);
}

int snapfs_pipe2(int fds[2], int flags) {
    return pipe2(fds, flags);
}

int snapfs_spawn_add_fchdir(void *actions, int fd) {
    return posix_spawn_file_actions_addfchdir_np((posix_spawn_file_actions_t *)actions, fd);
}

int snapfs_spawn_add_closefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}

int snapfs_fcntl_int(int fd, int cmd, int arg) {
    return fcntl(fd, cmd, arg);
}

int snapfs_ioctl_int(int fd, unsigned long request, long arg) {
    return ioctl(fd, request, arg);
}

int snapfs_start_writeback(int fd, off_t offset, off_t length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

int snapfs_write_back_range(int fd, off_t offset, off_t length) {
    return sync_file_range(fd, offset, length,
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

int snapfs_syncfs(int fd) {
    return syncfs(fd);
}

ssize_t snapfs_splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags) {
    return splice(fd_in, off_in, fd_out, off_out, length, flags);
}

int snapfs_dev_major(uint64_t dev) { return (int)major(dev); }
int snapfs_dev_minor(uint64_t dev) { return (int)minor(dev); }

int snapfs_stat_without_times(int fd, void *out) {
    struct stat *st = out;
    struct statx sx;
    unsigned int mask = STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_UID | STATX_GID
                      | STATX_INO | STATX_SIZE | STATX_BLOCKS | STATX_ATIME;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, mask, &sx) != 0) return -1;
    memset(st, 0, sizeof(*st));
    st->st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    st->st_ino = sx.stx_ino;
    st->st_mode = sx.stx_mode;
    st->st_nlink = sx.stx_nlink;
    st->st_uid = sx.stx_uid;
    st->st_gid = sx.stx_gid;
    st->st_rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    st->st_size = (off_t)sx.stx_size;
    st->st_blksize = sx.stx_blksize;
    st->st_blocks = (blkcnt_t)sx.stx_blocks;
    st->st_atim.tv_sec = sx.stx_atime.tv_sec;
    st->st_atim.tv_nsec = sx.stx_atime.tv_nsec;
    return 0;
}

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

ssize_t snapfs_getdents64(int fd, void *buffer, size_t size) {
    return (ssize_t)syscall(SYS_getdents64, fd, buffer, size);
}

int snapfs_ficlone(int dst_fd, int src_fd) {
    return ioctl(dst_fd, FICLONE, src_fd);
}

int snapfs_ficlonerange(int dst_fd, int src_fd, uint64_t offset, uint64_t length) {
    struct file_clone_range range = { .src_fd = src_fd, .src_offset = offset, .src_length = length, .dest_offset = offset };
    return ioctl(dst_fd, FICLONERANGE, &range);
}

int snapfs_btrfs_snapshot(int parent_fd, int source_fd, const char *name, int read_only) {
    struct btrfs_ioctl_vol_args_v2 args;
    size_t length = strlen(name);
    if (length > BTRFS_SUBVOL_NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    memset(&args, 0, sizeof(args));
    args.fd = source_fd;
    args.flags = read_only ? BTRFS_SUBVOL_RDONLY : 0;
    memcpy(args.name, name, length);
    return ioctl(parent_fd, BTRFS_IOC_SNAP_CREATE_V2, &args);
}

/* A btrfs ioctl on `parent_fd` that names one entry of it (struct btrfs_ioctl_vol_args). */
static int btrfs_named_ioctl(int parent_fd, unsigned long request, const char *name) {
    struct btrfs_ioctl_vol_args args;
    size_t length = strlen(name);
    if (length > BTRFS_PATH_NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    memset(&args, 0, sizeof(args));
    memcpy(args.name, name, length);
    return ioctl(parent_fd, request, &args);
}

int snapfs_btrfs_subvolume_create(int parent_fd, const char *name) {
    return btrfs_named_ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, name);
}

int snapfs_btrfs_get_subvolume_flags(int fd, uint64_t *flags) {
    return ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, flags);
}

int snapfs_btrfs_set_subvolume_flags(int fd, uint64_t flags) {
    return ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags);
}

int snapfs_btrfs_destroy(int parent_fd, const char *name) {
    return btrfs_named_ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, name);
}

long snapfs_filesystem_type(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -1;
    return (long)info.f_type;
}

/* Acting as the caller (CLinux.h). Capabilities and the fsuid are per thread on Linux. */
#include <linux/capability.h>
#include <sys/fsuid.h>

static int identity_managed = 0;
/* CAP_SYS_RESOURCE is in the permitted set (a container may not give it even to root). */
static int resource_capable = 0;
static struct __user_cap_data_struct identity_caps[2];
/* CAP_SYS_RESOURCE in this thread's effective set: -1 unknown (a new thread has its
   creator's set), 0 out, 1 in. */
static __thread int resource_state = -1;
/* Inside snapfs_allocation_begin/end. */
static __thread int allocating = 0;

static int identity_set(int resource) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memcpy(data, identity_caps, sizeof data);
    if (!resource) data[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
    if (syscall(SYS_capset, &header, data) != 0) return -1;
    resource_state = resource;
    return 0;
}

int snapfs_identity_init(void) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    if (geteuid() != 0 || syscall(SYS_capget, &header, identity_caps) != 0) return 0;
    /* The effective set the daemon works with: all it may have. */
    identity_caps[0].effective = identity_caps[0].permitted;
    identity_caps[1].effective = identity_caps[1].permitted;
    identity_caps[0].inheritable = identity_caps[1].inheritable = 0;
    resource_capable = (identity_caps[CAP_SYS_RESOURCE / 32].permitted & (1u << (CAP_SYS_RESOURCE % 32))) != 0;
    if (identity_set(0) != 0) return 0;
    identity_managed = 1;
    return 1;
}

int snapfs_resource_capability(int raised) {
    if (!resource_capable || resource_state == raised) return 0;
    return identity_set(raised);
}

int snapfs_allocation_begin(uid_t uid, int owner_of_fd) {
    if (!identity_managed || allocating) return 0;
    if (owner_of_fd >= 0) {
        struct stat st;
        if (fstat(owner_of_fd, &st) != 0) return 0;
        uid = st.st_uid;
    }
    allocating = 1;
    if (uid == 0) return 1;
    setfsuid(uid);
    /* A new fsuid takes the filesystem capabilities out of the effective set: put them back,
       without CAP_SYS_RESOURCE. */
    identity_set(0);
    return 2;
}

void snapfs_allocation_end(int begun) {
    if (begun == 0) return;
    allocating = 0;
    /* fsuid 0 again puts the filesystem capabilities back (CAP_SYS_RESOURCE stays out). */
    if (begun == 2) setfsuid(0);
}

int snapfs_get_inode_flags(int fd, int *flags) {
    return ioctl(fd, FS_IOC_GETFLAGS, flags);
}

int snapfs_set_inode_flags(int fd, int flags) {
    return ioctl(fd, FS_IOC_SETFLAGS, &flags);
}
