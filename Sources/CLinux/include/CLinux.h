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
/* accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (accept4 is _GNU_SOURCE-only). */
int snapfs_accept_nonblocking(int fd);
int snapfs_ioctl_int(int fd, unsigned long request, long arg);
int snapfs_syncfs(int fd);
/* sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE): starts writing the range back, without waiting. */
int snapfs_start_writeback(int fd, off_t offset, off_t length);
/* Writes back the range's dirty pages and waits until they are on the disk (sync_file_range
   with WAIT_BEFORE | WRITE | WAIT_AFTER; no metadata, no cache flush). */
int snapfs_write_back_range(int fd, off_t offset, off_t length);
ssize_t snapfs_splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t length, unsigned int flags);
int snapfs_dev_major(uint64_t dev);
/* name_to_handle_at(fd, "", …, AT_EMPTY_PATH) into `buffer` (a struct file_handle);
   returns the number of bytes used, or -1. */
int snapfs_handle_of(int fd, unsigned char *buffer, size_t size);
/* open_by_handle_at(mount_fd, buffer, flags) for a handle from snapfs_handle_of. */
int snapfs_open_by_handle(int mount_fd, unsigned char *buffer, int flags);
int snapfs_dev_minor(uint64_t dev);
/* The status of `fd` (symlinks and SNAPFS_O_PATH descriptors included) by statx(2) without
   asking for the modification and change times: st_mtim and st_ctim are left zero. Asking
   for them marks the inode's times as seen (Linux >= 6.13, multigrain timestamps), so its
   next change takes a fine-grained timestamp, which moves the clock every file system's
   coarse timestamps read: a FUSE file written through the kernel's write-back cache then
   gets a new modification time at every write, and the kernel sends a setattr before each
   fsync to hand it over. */
int snapfs_stat_without_times(int fd, void *st);   /* st: a struct stat */
/* pipe2(fds, flags). */
int snapfs_pipe2(int fds[2], int flags);
/* posix_spawn_file_actions_addfchdir_np(actions, fd): the child's working directory is the
   directory open at `fd`. `actions` is a posix_spawn_file_actions_t *. */
int snapfs_spawn_add_fchdir(void *actions, int fd);
/* posix_spawn_file_actions_addclosefrom_np(actions, from): every descriptor from `from` up
   is closed in the child. */
int snapfs_spawn_add_closefrom(void *actions, int from);

enum {
    SNAPFS_RENAME_NOREPLACE = 1,
    SNAPFS_RENAME_EXCHANGE = 2,
    SNAPFS_RENAME_WHITEOUT = 4,
};

/* Tree cloning and btrfs (SnapFSSnapshots/Build). */
static const int SNAPFS_O_NOATIME = 01000000;
static const int SNAPFS_SEEK_DATA = 3;
static const int SNAPFS_SEEK_HOLE = 4;
static const long SNAPFS_BTRFS_SUPER_MAGIC = 0x9123683E;
/* The root directory of every btrfs subvolume has this inode number. */
static const unsigned long SNAPFS_BTRFS_FIRST_FREE_OBJECTID = 256;
static const uint64_t SNAPFS_BTRFS_SUBVOL_RDONLY = 1ULL << 1;

/* fstatfs(2)'s f_type (the filesystem's magic number), or -1. */
long snapfs_filesystem_type(int fd);
/* getdents64(2): fills `buffer` with struct linux_dirent64 records. */
ssize_t snapfs_getdents64(int fd, void *buffer, size_t size);
/* ioctl(dst_fd, FICLONE, src_fd). */
int snapfs_ficlone(int dst_fd, int src_fd);
/* ioctl(dst_fd, FICLONERANGE): `length` bytes of `src_fd` at `offset` to the same offset of
   `dst_fd` (0: to the source's end). Offsets and length in whole filesystem blocks. */
int snapfs_ficlonerange(int dst_fd, int src_fd, uint64_t offset, uint64_t length);
/* BTRFS_IOC_SNAP_CREATE_V2 on `parent_fd`: snapshot of the subvolume `source_fd` as `name`. */
int snapfs_btrfs_snapshot(int parent_fd, int source_fd, const char *name, int read_only);
/* BTRFS_IOC_SUBVOL_CREATE on `parent_fd`: a new, empty subvolume `name`. */
int snapfs_btrfs_subvolume_create(int parent_fd, const char *name);
/* BTRFS_IOC_SUBVOL_GETFLAGS / SETFLAGS on a subvolume's root directory. */
int snapfs_btrfs_get_subvolume_flags(int fd, uint64_t *flags);
int snapfs_btrfs_set_subvolume_flags(int fd, uint64_t flags);
/* FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (the inode flags chattr(1) shows, such as immutable). */
int snapfs_get_inode_flags(int fd, int *flags);
int snapfs_set_inode_flags(int fd, int flags);
static const int SNAPFS_FS_IMMUTABLE_FL = 0x00000010;
/* BTRFS_IOC_SNAP_DESTROY on `parent_fd`: deletes the subvolume `name` with its content. */
int snapfs_btrfs_destroy(int parent_fd, const char *name);

/* Acting as the caller for the resources a write spends (see CallerIdentity.swift).
   snapfs_identity_init: at start, before any thread: remembers the capabilities and takes
   CAP_SYS_RESOURCE out of the calling thread's effective set; returns 1 if the process
   can act as others (it runs as root), else 0 and the other calls do nothing.
   snapfs_resource_capability: puts CAP_SYS_RESOURCE in (1) or out of (0) the calling
   thread's effective set; a system call only when that changes.
   snapfs_allocation_begin: for the calls that allocate blocks on behalf of `uid` until the
   matching snapfs_allocation_end: a uid other than 0 becomes the thread's filesystem uid
   (ext4 keeps its reserved blocks for fsuid 0), without CAP_SYS_RESOURCE (which passes
   quotas and the reserve); the daemon's other capabilities stay. With `owner_of_fd` >= 0
   the uid is that file's owner (for write-back of cached data). Nested calls do nothing.
   Returns what snapfs_allocation_end needs. */
int snapfs_identity_init(void);
int snapfs_resource_capability(int raised);
int snapfs_allocation_begin(uid_t uid, int owner_of_fd);
void snapfs_allocation_end(int begun);

#endif
